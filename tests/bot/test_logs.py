"""Log output: structured one-line records for the bot, plain lines for the command line,
and the libraries' chatter silenced."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from bot.logs import configure_bot_logging, configure_cli_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_key_value_lines_are_one_line_each() -> None:
    """`text`: key=value pairs, quoted when needed, extra fields as keys, newlines escaped."""
    stream = io.StringIO()
    configure_bot_logging("text", "info", stream=stream)
    logging.getLogger("bot.test").info("job settled", extra={"job": "ab12", "note": "a\nb c"})
    logging.getLogger("bot.test").debug("not shown at info")
    [line] = stream.getvalue().splitlines()
    assert line.startswith("ts=") and " level=info logger=bot.test " in line
    assert 'msg="job settled" job=ab12 note="a\\nb c"' in line


def test_json_lines_are_selectable() -> None:
    """`json`: one object per line with the same fields."""
    stream = io.StringIO()
    configure_bot_logging("json", "info", stream=stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("bot.test").exception("failed", extra={"job": "x"})
    [line] = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["msg"] == "failed" and record["job"] == "x"
    assert record["level"] == "error" and record["error"] == "ValueError: boom"


def test_discord_voice_warnings_are_dropped() -> None:
    """discord.py's PyNaCl/davey notes about voice (which the bot never uses) are filtered."""
    stream = io.StringIO()
    configure_bot_logging("text", "info", stream=stream)
    voice = "PyNaCl is not installed, voice will NOT be supported"
    logging.getLogger("discord.client").warning(voice)
    logging.getLogger("discord.client").warning("something else")
    assert "PyNaCl" not in stream.getvalue() and "something else" in stream.getvalue()


def test_cli_shows_warnings_only_unless_verbose() -> None:
    """The command line prints its own output; logs show from WARNING, without timestamps,
    and everything with -v."""
    stream = io.StringIO()
    configure_cli_logging(stream=stream)
    logging.getLogger("generation.x").info("model loaded")
    logging.getLogger("generation.x").warning("careful")
    assert stream.getvalue() == "imagine: warning: careful\n"
    stream = io.StringIO()
    configure_cli_logging(verbose=True, stream=stream)
    logging.getLogger("generation.x").info("model loaded")
    assert "model loaded" in stream.getvalue()


def test_log_lines_follow_a_redirected_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a given stream, records go to sys.stderr as it is when they come (a rich
    progress display redirects it to print lines above itself)."""
    configure_bot_logging("text", "info")
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)
    logging.getLogger("generation.x").info("after the redirect")
    assert "after the redirect" in later.getvalue()
