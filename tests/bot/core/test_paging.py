"""Two-way keyset paging and the compact encodings paging buttons carry."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from bot.core.paging import b36decode, b36encode, decode_cursor, encode_cursor, newer_page
from bot.services.history import Cursor

ITEMS = list(range(100, 0, -1))  # newest first: 100, 99, ..., 1


def fetcher(items: Sequence[int], chunk: int):  # type: ignore[no-untyped-def]
    """A newest-first list paged by `before` (the last id seen), like the services."""
    calls: list[int | None] = []

    async def fetch(before: int | None) -> tuple[list[int], int | None]:
        calls.append(before)
        rest = [i for i in items if before is None or i < before]
        page = rest[:chunk]
        return page, (page[-1] if len(rest) > chunk else None)

    return fetch, calls


@pytest.mark.parametrize(
    ("first", "expected", "has_newer"),
    [
        (92, [100, 99, 98, 97, 96, 95, 94, 93], False),
        (84, [92, 91, 90, 89, 88, 87, 86, 85], True),
        (97, [100, 99, 98], False),
        (5, [13, 12, 11, 10, 9, 8, 7, 6], True),
    ],
)
async def test_newer_page_is_the_page_above(
    first: int, expected: list[int], has_newer: bool
) -> None:
    """The page just newer than `first`, with whether anything is newer still."""
    fetch, _ = fetcher(ITEMS, chunk=7)
    page = await newer_page(fetch, lambda i: i, lambda a, b: a > b, first, 8)
    assert list(page.items) == expected
    assert page.has_newer is has_newer and page.has_older is True


async def test_newer_page_stops_reading_at_the_current_page() -> None:
    """The walk reads only down to the page being left, not the whole list."""
    fetch, calls = fetcher(ITEMS, chunk=10)
    await newer_page(fetch, lambda i: i, lambda a, b: a > b, 75, 8)
    assert calls == [None, 91, 81]


def test_base36_round_trips_snowflakes() -> None:
    """Base 36 is shorter than decimal and decodes back exactly."""
    for number in (0, 35, 36, 1_234_567_890_123_456_789, 2**64 - 1):
        text = b36encode(number)
        assert b36decode(text) == number and len(text) <= 13


@pytest.mark.parametrize("text", ["", "ABC", "-1", "1_0", "z" * 15])
def test_base36_rejects_other_text(text: str) -> None:
    """Anything `b36encode` would not produce is a ValueError."""
    with pytest.raises(ValueError):
        b36decode(text)


@pytest.mark.parametrize("job_id", ["0123456789abcdef" * 2, "custom-id_1"])
def test_cursor_round_trips(job_id: str) -> None:
    """A cursor survives the custom_id encoding to the microsecond, uuid-hex id or not."""
    moment = datetime(2026, 3, 11, 15, 30, 5, 123457, tzinfo=UTC)
    cursor = Cursor(moment, job_id)
    encoded = encode_cursor(cursor)
    assert decode_cursor(encoded) == cursor
    assert len(encoded) <= 35


def test_cursor_encoding_is_exact_for_every_microsecond() -> None:
    """No float rounding: neighbouring microseconds stay distinct and in order."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for micros in range(0, 2000, 7):
        moment = start + timedelta(microseconds=micros)
        assert decode_cursor(encode_cursor(Cursor(moment, "a" * 32))).created_at == moment


@pytest.mark.parametrize(
    "text", ["", "abc", "abc.", "abc.short", "ABC.AAAAAAAAAAAAAAAAAAAAAA", "zzzzzzzzzzzzzz.~x",
             "abc.~bad.id", "abc.AAAAAAAAAAAAAAAAAAAA!!"]
)
def test_cursor_rejects_malformed_text(text: str) -> None:
    """A tampered or truncated cursor is a ValueError, never a wrong cursor."""
    with pytest.raises(ValueError):
        decode_cursor(text)
