"""`imagine worker`: its help, and a clear refusal without PostgreSQL (no database needed)."""

from __future__ import annotations

import pytest

from bot.cli import main


def test_worker_help_names_the_device_and_the_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["worker", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for text in ("--device", "cuda:N", "--config", "one per GPU", "same seeds", "SIGTERM"):
        assert text in out


def test_worker_without_postgresql_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IMAGINE_DATABASE__URL", "sqlite+aiosqlite:///imagine.db")
    monkeypatch.delenv("IMAGINE_POOL__DSN", raising=False)
    assert main(["worker", "--device", "cpu"]) == 2
    assert "needs PostgreSQL" in capsys.readouterr().err
