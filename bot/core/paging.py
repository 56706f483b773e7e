"""Keyset paging in both directions over newest-first lists that only page towards older items.

The services list newest first and take a `before` cursor (the last item already shown), which
is stable while new rows arrive and short enough for a button's custom_id. Going *back* to
newer items has no such query, so `newer_page` walks the list from the top down to the page
being left and keeps the last `size` items seen: O(position) rows read, in chunks of `CHUNK`,
which is cheap for the few hundred jobs a member browses and needs no extra index or query.

Also the compact number and cursor encodings the paging buttons put in their custom_ids
(Discord allows 100 characters).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from bot.services.history import Cursor

__all__ = [
    "CHUNK",
    "PageSlice",
    "b36decode",
    "b36encode",
    "decode_cursor",
    "encode_cursor",
    "newer_page",
]

CHUNK = 100  # the services' largest page

T = TypeVar("T")
K = TypeVar("K")

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_B36 = re.compile(r"^[0-9a-z]{1,14}$")
_HEX_ID = re.compile(r"^[0-9a-f]{32}$")
_RAW_ID = re.compile(r"^[0-9A-Za-z_-]{1,32}$")
_PACKED_ID = re.compile(r"^[0-9A-Za-z_-]{22}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class PageSlice(Generic[T]):
    """One page of items, newest first, and whether there is anything either side of it."""

    items: Sequence[T]
    has_newer: bool
    has_older: bool


async def newer_page(
    fetch: Callable[[K | None], Awaitable[tuple[Sequence[T], K | None]]],
    key: Callable[[T], K],
    is_newer: Callable[[K, K], bool],
    first: K,
    size: int,
) -> PageSlice[T]:
    """The `size` items just newer than the item keyed `first` (the top of the page shown).

    `fetch(before)` returns a chunk newest first and the cursor of the next chunk (None at the
    end); `is_newer(a, b)` says whether key a sorts before key b in the list.
    """
    window: deque[T] = deque(maxlen=size + 1)
    before: K | None = None
    while True:
        chunk, before = await fetch(before)
        for item in chunk:
            if not is_newer(key(item), first):
                return _window_slice(window, size)
            window.append(item)
        if before is None:
            return _window_slice(window, size)


def _window_slice(window: deque[T], size: int) -> PageSlice[T]:
    items = list(window)
    return PageSlice(items=items[-size:], has_newer=len(items) > size, has_older=True)


def b36encode(number: int) -> str:
    """A non-negative integer in base 36 (a snowflake takes 12-13 characters, not 19)."""
    if number < 0:
        raise ValueError(f"negative number: {number}")
    digits = []
    while True:
        number, rest = divmod(number, 36)
        digits.append(_DIGITS[rest])
        if number == 0:
            return "".join(reversed(digits))


def b36decode(text: str) -> int:
    """Inverse of `b36encode`; ValueError for anything it would not produce."""
    if not _B36.match(text):
        raise ValueError(f"not a base-36 number: {text!r}")
    return int(text, 36)


def encode_cursor(cursor: Cursor) -> str:
    """A history cursor in ~34 characters: micro-timestamp in base 36, then the job id
    (a uuid hex id as 22 base64url characters; any other id raw after a '~')."""
    micros = (cursor.created_at - _EPOCH) // _MICROSECOND  # exact, no float rounding
    if _HEX_ID.match(cursor.job_id):
        packed = base64.urlsafe_b64encode(bytes.fromhex(cursor.job_id)).decode().rstrip("=")
    elif _RAW_ID.match(cursor.job_id):
        packed = "~" + cursor.job_id
    else:
        raise ValueError(f"job id cannot go in a custom_id: {cursor.job_id!r}")
    return f"{b36encode(micros)}.{packed}"


def decode_cursor(text: str) -> Cursor:
    """Inverse of `encode_cursor`; ValueError for anything it would not produce."""
    micros_text, sep, packed = text.partition(".")
    if not sep:
        raise ValueError(f"not a cursor: {text!r}")
    micros = b36decode(micros_text)
    if packed.startswith("~"):
        job_id = packed[1:]
        if not _RAW_ID.match(job_id):
            raise ValueError(f"not a cursor: {text!r}")
    elif _PACKED_ID.match(packed):
        try:
            job_id = base64.urlsafe_b64decode(packed + "==").hex()
        except (binascii.Error, ValueError):
            raise ValueError(f"not a cursor: {text!r}") from None
    else:
        raise ValueError(f"not a cursor: {text!r}")
    try:
        created = _EPOCH + micros * _MICROSECOND
    except OverflowError:
        raise ValueError(f"not a cursor: {text!r}") from None
    return Cursor(created_at=created, job_id=job_id)
