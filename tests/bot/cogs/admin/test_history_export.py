"""`/history export`: the CSV is built from Core rows and compressed in the thread helper."""

from __future__ import annotations

import csv
import gzip
import io
import threading

import pytest

from bot.cogs.admin import history as history_cog
from bot.cogs.admin.history import export_history
from bot.core.threads import THREAD_NAME, Threads
from bot.presentation.history_format import HistoryQuery
from bot.services import Services
from bot.services import history as history_service
from bot.services.history import CSV_COLUMNS, CsvWriter, JobRecord
from generation.params import PARAM_FIELDS, GenerationParams

GUILD = 7


async def _add_jobs(services: Services, count: int) -> None:
    for i in range(count):
        params = GenerationParams(f"fox number {i}", steps=20 + i, seed=i, count=1)
        record = JobRecord(GUILD, 10, 20, params, model_id="builtin:tiny-random")
        await services.history.create_job(record)


async def test_export_runs_in_the_thread_helper(
    services: Services, threads: Threads, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writing the CSV and gzipping it happen on a helper thread, not on the event loop."""
    await _add_jobs(services, 30)
    ran_on: list[tuple[str, str]] = []

    class SpyWriter(CsvWriter):
        def write(self, rows):  # type: ignore[no-untyped-def]
            ran_on.append(("write", threading.current_thread().name))
            super().write(rows)

        def finish(self, compress_over=None):  # type: ignore[no-untyped-def]
            ran_on.append(("finish", threading.current_thread().name))
            return super().finish(compress_over)

    monkeypatch.setattr(history_cog, "CsvWriter", SpyWriter)
    monkeypatch.setattr(history_service, "EXPORT_BATCH", 12)
    export = await export_history(services.history, threads, GUILD, HistoryQuery(), limit=500)

    assert [step for step, _ in ran_on] == ["write"] * 3 + ["finish"]  # 12 + 12 + 6 rows
    loop_thread = threading.current_thread().name
    assert all(name.startswith(THREAD_NAME) and name != loop_thread for _, name in ran_on)
    assert export.rows == 30 and export.compressed  # over the 500-byte limit: gzipped
    text = gzip.decompress(export.data).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert {row["prompt"] for row in rows} == {f"fox number {i}" for i in range(30)}
    assert all(int(row["steps"]) == 20 + int(row["prompt"].split()[-1]) for row in rows)


async def test_export_columns_follow_the_parameters(services: Services, threads: Threads) -> None:
    """Every `GenerationParams` field is a column, in order; a small export is not gzipped."""
    await _add_jobs(services, 1)
    export = await export_history(
        services.history, threads, GUILD, HistoryQuery(), limit=1 << 20
    )
    assert not export.compressed
    header = next(csv.reader(io.StringIO(export.data.decode("utf-8-sig"))))
    start = header.index(PARAM_FIELDS[0])
    assert tuple(header[start : start + len(PARAM_FIELDS)]) == PARAM_FIELDS
