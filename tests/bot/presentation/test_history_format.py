"""`/history`'s query, the custom_ids of its paging buttons, and how entries read."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from bot.db.models import JobKind, JobStatus
from bot.presentation.history_format import (
    CUSTOM_ID_MAX,
    MAX_TEXT_FILTER,
    PAGE_TEMPLATE,
    Direction,
    HistoryQuery,
    PageRef,
    QueryError,
    entry_text,
    page_custom_id,
    parse_page_ref,
)
from bot.services.history import Cursor, JobView
from generation.params import GenerationParams

NOW = dt.datetime(2026, 3, 11, 15, 30, 5, 250, tzinfo=dt.UTC)
CURSOR = Cursor(NOW, "0123456789abcdef" * 2)


def job(prompt: str = "a fox", **changes: object) -> JobView:
    params = GenerationParams(prompt, steps=2, width=64, height=64, scheduler="ddim", seed=42)
    values: dict[str, object] = {
        "id": "f" * 32, "guild_id": 1, "channel_id": 2, "user_id": 3, "params": params,
        "seeds": (42, 43, 44, 45), "model_id": "m", "kind": JobKind.TXT2IMG, "parent_job_id": None,
        "image_index": None, "status": JobStatus.SUCCEEDED, "error": None, "created_at": NOW,
        "started_at": None, "finished_at": None, "gpu_seconds": 1.0, "result_channel_id": 2,
        "result_message_id": 9, "nsfw": None,
    }
    values.update(changes)
    return JobView(**values)  # type: ignore[arg-type]


def round_trip(ref: PageRef) -> PageRef:
    custom_id = page_custom_id(ref)
    assert custom_id is not None
    match = re.fullmatch(PAGE_TEMPLATE, custom_id)
    assert match is not None, custom_id
    return parse_page_ref(match)


@pytest.mark.parametrize(
    "query",
    [
        HistoryQuery(user_id=3),
        HistoryQuery(),
        HistoryQuery(
            user_id=2**63 - 1,
            text="x" * MAX_TEXT_FILTER,
            status=JobStatus.BLOCKED,
            since=dt.date(2026, 1, 2),
            until=dt.date(2026, 3, 4),
        ),
        HistoryQuery(text="a: b:c *ü*"),
    ],
)
@pytest.mark.parametrize("direction", list(Direction))
def test_page_custom_id_round_trips(query: HistoryQuery, direction: Direction) -> None:
    """Direction, filters and cursor come back intact from the custom_id, within 100 chars."""
    ref = PageRef(direction, query, CURSOR)
    assert round_trip(ref) == ref
    custom_id = page_custom_id(ref)
    assert custom_id is not None and len(custom_id) <= CUSTOM_ID_MAX


def test_text_filter_limit_leaves_room() -> None:
    """The text filter allows a usable length and still fits the worst-case custom_id."""
    assert MAX_TEXT_FILTER >= 20


def test_too_wide_text_gets_no_custom_id() -> None:
    """Text that would push the custom_id past 100 UTF-16 units yields None, not a bad id."""
    query = HistoryQuery(user_id=2**63 - 1, text="😀" * MAX_TEXT_FILTER)
    assert page_custom_id(PageRef(Direction.OLDER, query, CURSOR)) is None


def test_build_parses_days_and_makes_until_inclusive() -> None:
    """since/until are UTC days; until includes its whole day."""
    query = HistoryQuery.build(5, " castle ", "failed", "2026-03-01", "2026-03-02")
    filters = query.filters()
    assert filters.user_id == 5 and filters.text == "castle"
    assert filters.status is JobStatus.FAILED
    assert filters.since == dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    assert filters.until == dt.datetime(2026, 3, 3, tzinfo=dt.UTC)
    assert query.describe() == 'prompt contains "castle", status failed, 2026-03-01 to 2026-03-02'


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"since": "2026-3-1"}, "YYYY-MM-DD"),
        ({"until": "2026-02-30"}, "not a real day"),
        ({"since": "2026-03-05", "until": "2026-03-01"}, "is after"),
        ({"text": "x" * (MAX_TEXT_FILTER + 1)}, f"at most {MAX_TEXT_FILTER}"),
    ],
)
def test_build_names_the_bad_option(options: dict[str, str], message: str) -> None:
    """A malformed option raises QueryError with a message for the member."""
    with pytest.raises(QueryError, match=message):
        HistoryQuery.build(1, **options)


def test_export_may_allow_longer_text() -> None:
    """An export has no paging buttons, so its caller may allow a longer text filter."""
    long_text = "y" * (MAX_TEXT_FILTER + 10)
    assert HistoryQuery.build(None, long_text, text_max=200).text == long_text


def test_entry_shows_time_status_seed_link_and_id() -> None:
    """An entry has a Discord timestamp, status, seed, the result link and the job id."""
    text = entry_text(job(), show_member=True)
    assert f"<t:{int(NOW.timestamp())}:f>" in text
    assert "**succeeded**" in text and "seed 42" in text
    assert "[result](https://discord.com/channels/1/2/9)" in text
    assert f"`{'f' * 32}` · <@3>" in text


def test_entry_escapes_and_shortens_the_prompt() -> None:
    """Markdown and mentions in a prompt are neutralised; long prompts are cut."""
    text = entry_text(job(prompt="**hi** @everyone " + "z" * 300), show_member=False)
    assert "\\*\\*hi\\*\\*" in text and "@\u200beveryone" in text
    assert text.endswith("…") and len(text) < 400
    assert "<@3>" not in text


def test_failed_entry_has_no_result_link() -> None:
    """Only succeeded jobs link a result."""
    assert "[result]" not in entry_text(job(status=JobStatus.FAILED), show_member=False)


def test_until_the_last_representable_day_means_no_upper_bound() -> None:
    """until=9999-12-31 is accepted (its next midnight does not exist): no upper bound."""
    query = HistoryQuery.build(1, until="9999-12-31")
    assert query.filters().until is None
    assert query.describe() == "until 9999-12-31"
