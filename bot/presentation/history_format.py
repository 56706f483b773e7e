"""`/history`: the query a member or admin asked for, its paging buttons' ids, and the text.

No interactions here, only values: the history cog turns options into a `HistoryQuery`,
pages through `HistoryService.list`, and renders entries with `entry_text`.

A paging button carries everything needed to show its page (direction, filters, cursor) in
its custom_id, so it still works after the bot restarted. Discord allows 100 characters
there; with the compact encodings of `bot.paging` the fixed part takes at most 76, which is
why the text filter is limited to `MAX_TEXT_FILTER` characters.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from enum import StrEnum

from discord.utils import format_dt

from bot.core.paging import b36decode, b36encode, decode_cursor, encode_cursor
from bot.db.models import JobStatus
from bot.presentation.messages import neutralise
from bot.services.history import Cursor, JobFilter, JobView
from generation.text import cut_text

__all__ = [
    "CUSTOM_ID_MAX",
    "MAX_TEXT_FILTER",
    "PAGE_SIZE",
    "PAGE_TEMPLATE",
    "Direction",
    "HistoryQuery",
    "PageRef",
    "QueryError",
    "entry_text",
    "page_custom_id",
    "parse_day",
    "parse_page_ref",
]

PAGE_SIZE = 8
CUSTOM_ID_MAX = 100
PROMPT_SHOWN = 120

STATUS_CODES: dict[JobStatus, str] = {
    JobStatus.QUEUED: "q",
    JobStatus.RUNNING: "r",
    JobStatus.SUCCEEDED: "s",
    JobStatus.FAILED: "f",
    JobStatus.CANCELLED: "c",
    JobStatus.BLOCKED: "b",
}
_CODE_STATUS = {code: status for status, code in STATUS_CODES.items()}

PREFIX = "imagine:h:"
#: The DynamicItem template; `parse_page_ref` checks the pieces further.
PAGE_TEMPLATE = (
    r"imagine:h:(?P<d>[on]):(?P<user>[0-9a-z]*):(?P<status>[qrsfcb]?):"
    r"(?P<since>[0-9a-z]*):(?P<until>[0-9a-z]*):(?P<cursor>[0-9a-z]+\.~?[0-9A-Za-z_-]+):"
    r"(?P<text>(?s:.*))"
)
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class QueryError(ValueError):
    """An option a member typed is not usable; the message says which and why."""


class Direction(StrEnum):
    """Which way a paging button goes: towards older or newer jobs."""

    OLDER = "o"
    NEWER = "n"


@dataclass(frozen=True)
class HistoryQuery:
    """What to list. `user_id` None: every member (admins only). Days are UTC, inclusive."""

    user_id: int | None = None
    text: str | None = None
    status: JobStatus | None = None
    since: dt.date | None = None
    until: dt.date | None = None

    def filters(self) -> JobFilter:
        """The service's filter for `HistoryService.list` / `export_rows` (guild aside)."""
        return JobFilter(
            user_id=self.user_id,
            text=self.text,
            status=self.status,
            since=_midnight(self.since) if self.since else None,
            # `until` is inclusive for people, exclusive for the service (the last day
            # there is has no next midnight: no upper bound then).
            until=(
                _midnight(self.until + dt.timedelta(days=1))
                if self.until and self.until < dt.date.max
                else None
            ),
        )

    def describe(self) -> str:
        """The filters in words, for the page footer ("" when there are none)."""
        parts = []
        if self.text:
            parts.append(f'prompt contains "{self.text}"')
        if self.status:
            parts.append(f"status {self.status.value}")
        if self.since and self.until:
            parts.append(f"{self.since.isoformat()} to {self.until.isoformat()}")
        elif self.since:
            parts.append(f"since {self.since.isoformat()}")
        elif self.until:
            parts.append(f"until {self.until.isoformat()}")
        return ", ".join(parts)

    @classmethod
    def build(
        cls,
        user_id: int | None,
        text: str | None = None,
        status: JobStatus | str | None = None,
        since: str | None = None,
        until: str | None = None,
        *,
        text_max: int | None = None,
    ) -> HistoryQuery:
        """A query from slash options; raises QueryError naming the bad option.

        `text_max`: the longest text filter (default `MAX_TEXT_FILTER`, what fits in a paging
        button; an export has no buttons and may allow more).
        """
        text = text.strip() if text else None
        text_max = MAX_TEXT_FILTER if text_max is None else text_max
        if text and len(text) > text_max:
            raise QueryError(f"The text filter has at most {text_max} characters.")
        first = parse_day(since, "since") if since else None
        last = parse_day(until, "until") if until else None
        if first and last and first > last:
            raise QueryError(f"`since` ({first}) is after `until` ({last}).")
        return cls(
            user_id=user_id,
            text=text or None,
            status=JobStatus(status) if status else None,
            since=first,
            until=last,
        )


@dataclass(frozen=True)
class PageRef:
    """What a paging button shows: the page older or newer than `cursor` for `query`."""

    direction: Direction
    query: HistoryQuery
    cursor: Cursor


def parse_day(text: str, option: str) -> dt.date:
    """A YYYY-MM-DD day; QueryError naming the option otherwise."""
    text = text.strip()
    if not _DAY.match(text):
        raise QueryError(f"`{option}` must be a day written YYYY-MM-DD, got {text!r}.")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise QueryError(f"`{option}`: {text} is not a real day.") from None


def page_custom_id(ref: PageRef) -> str | None:
    """The custom_id of a paging button; None when it would not fit in Discord's 100
    characters (only a text filter full of wide characters can do that)."""
    query = ref.query
    parts = [
        ref.direction.value,
        b36encode(query.user_id) if query.user_id is not None else "",
        STATUS_CODES[query.status] if query.status else "",
        b36encode(query.since.toordinal()) if query.since else "",
        b36encode(query.until.toordinal()) if query.until else "",
        encode_cursor(ref.cursor),
        query.text or "",
    ]
    custom_id = PREFIX + ":".join(parts)
    # Discord counts UTF-16 code units.
    if len(custom_id.encode("utf-16-le")) // 2 > CUSTOM_ID_MAX:
        return None
    return custom_id


def parse_page_ref(match: re.Match[str]) -> PageRef:
    """The `PageRef` from a custom_id matched by `PAGE_TEMPLATE`; ValueError if malformed."""
    query = HistoryQuery(
        user_id=b36decode(match["user"]) if match["user"] else None,
        text=match["text"] or None,
        status=_CODE_STATUS[match["status"]] if match["status"] else None,
        since=_day(match["since"]),
        until=_day(match["until"]),
    )
    return PageRef(Direction(match["d"]), query, decode_cursor(match["cursor"]))


def entry_text(job: JobView, *, show_member: bool) -> str:
    """One job in a history page: when, status, seed, result link, id, (member), prompt."""
    head = [format_dt(job.created_at, "f"), f"**{job.status.value}**"]
    if job.params.seed is not None:
        head.append(f"seed {job.params.seed}")
    if job.result_url and job.status is JobStatus.SUCCEEDED:
        head.append(f"[result]({job.result_url})")
    if job.delivered is False and job.status is JobStatus.SUCCEEDED:
        head.append("**not delivered** (kept: `/show` posts it)")
    ident = f"`{job.id}`"
    if show_member:
        ident += f" · <@{job.user_id}>"
    shown = neutralise(cut_text(job.params.prompt, PROMPT_SHOWN))
    return f"{' · '.join(head)}\n{ident}\n> {shown or '(empty prompt)'}"


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def _day(text: str) -> dt.date | None:
    if not text:
        return None
    try:
        return dt.date.fromordinal(b36decode(text))
    except (OverflowError, ValueError):
        raise ValueError(f"not a day: {text!r}") from None


def _fixed_width() -> int:
    """The longest custom_id without text: the largest snowflake, day and timestamp."""
    far = dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)
    worst = PageRef(
        Direction.OLDER,
        HistoryQuery(
            user_id=2**64 - 1,
            status=JobStatus.SUCCEEDED,
            since=far.date(),
            until=far.date(),
        ),
        Cursor(far, "f" * 32),
    )
    custom_id = page_custom_id(worst)
    assert custom_id is not None
    return len(custom_id)


MAX_TEXT_FILTER = CUSTOM_ID_MAX - _fixed_width()
