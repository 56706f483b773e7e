"""Logging for the two kinds of process: the command line and the bot.

- The command line (`imagine generate`, `imagine db`) prints its own output; log records show
  only from WARNING up (`-v`: everything, `-q`: errors only), as `imagine: warning: ...` lines
  without timestamps.
- The bot (`imagine run`) writes one structured line per event: ``key=value`` pairs (`text`)
  or one JSON object (`json`), chosen by `[log] format`. Fields passed with
  ``log.info("...", extra={"job": id})`` become keys of their own.

Both silence the libraries' chatter that an operator cannot act on: transformers' and
diffusers' notes and progress bars, discord.py's voice-support warnings (the bot has no voice).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import warnings
from typing import Any, TextIO

__all__ = [
    "JsonFormatter",
    "KeyValueFormatter",
    "configure_bot_logging",
    "configure_cli_logging",
    "quiet_libraries",
]

#: Attributes every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}

#: Messages from discord.py about voice support, which this bot never uses.
_VOICE_NOTES = ("PyNaCl is not installed", "davey is not installed", "voice will NOT be supported")


def quiet_libraries(verbose: bool = False) -> None:
    """Keep transformers, diffusers, huggingface_hub and discord.py to what matters.

    Call before those libraries are imported: transformers and diffusers read their verbosity
    from the environment at import. An operator's own `TRANSFORMERS_VERBOSITY` /
    `DIFFUSERS_VERBOSITY` still wins.
    """
    level = "info" if verbose else "error"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", level)
    os.environ.setdefault("DIFFUSERS_VERBOSITY", level)
    # "Please install torchvision for faster image processing" and similar advisories.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for name in ("transformers", "diffusers"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)
    logging.getLogger("discord.client").addFilter(_drop_voice_notes)
    logging.getLogger("discord.voice_state").addFilter(_drop_voice_notes)
    # Alembic announces each of its plugins at INFO; only the migrations themselves matter.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    if not verbose:
        warnings.filterwarnings("ignore", module=r"(transformers|diffusers|torchvision)(\..*)?")


def _drop_voice_notes(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(note in message for note in _VOICE_NOTES)


class _CliFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = f"imagine: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info and logging.getLogger().isEnabledFor(logging.DEBUG):
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_cli_logging(
    verbose: bool = False, quiet: bool = False, stream: TextIO | None = None
) -> None:
    """Command-line logging: warnings and errors only (`verbose`: all, `quiet`: errors)."""
    quiet_libraries(verbose)
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(_CliFormatter())
    _install(handler, level)


def configure_bot_logging(
    fmt: str = "text",
    level: str = "info",
    verbose: bool = False,
    quiet: bool = False,
    stream: TextIO | None = None,
) -> None:
    """Bot logging: one structured line per record (`fmt` "text" = key=value, or "json")."""
    quiet_libraries(verbose)
    name = "debug" if verbose else "warning" if quiet else level
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    _install(handler, logging.getLevelNamesMapping()[name.upper()])


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record comes: a progress display on the
    terminal (the start-up stages, `generation.progress`) redirects it to print lines above
    itself, so log lines never tear through it."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        """Ignored: the stream is always the current sys.stderr."""


def _install(handler: logging.Handler, level: int) -> None:
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # discord.py logs every gateway frame at DEBUG; keep it at INFO even with -v.
    logging.getLogger("discord").setLevel(max(level, logging.INFO))


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    if record.exc_info:
        exc = record.exc_info[1]
        fields["error"] = f"{type(exc).__name__}: {exc}" if exc is not None else "unknown"
    return fields


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=info logger=bot.app msg="model loaded" seconds=3.2``: one line a record.

    Values with spaces, quotes or ``=`` are double-quoted; newlines are escaped, so one record
    is always one line (tracebacks only at DEBUG, as an ``exc`` field).
    """

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        if record.exc_info and logging.getLogger().isEnabledFor(logging.DEBUG):
            fields["exc"] = self.formatException(record.exc_info)
        return " ".join(f"{key}={_kv_value(value)}" for key, value in fields.items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the same fields as `KeyValueFormatter`."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        if record.exc_info and logging.getLogger().isEnabledFor(logging.DEBUG):
            fields["exc"] = self.formatException(record.exc_info)
        return json.dumps(fields, default=str, ensure_ascii=False)


def _kv_value(value: Any) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\n\r\t'):
        return text
    return json.dumps(text, ensure_ascii=False)
