"""Audit log: entries per guild, newest first, paginated, filterable."""

from __future__ import annotations

import pytest

from bot.services import Services
from tests.db.fixtures import FakeClock

# Every storage path on SQLite, PostgreSQL/asyncpg and PostgreSQL/psycopg (rowcounts differ).
pytestmark = pytest.mark.every_driver

GUILD = 2**63 - 1
OTHER_GUILD = 7
ADMIN = 2**63 - 2


async def test_log_and_list_newest_first_with_pages(services: Services, clock: FakeClock) -> None:
    """Entries come back newest first, 10 per page, and a cursor walks through them all."""
    audit = services.audit
    for i in range(25):
        clock.advance(minutes=1)
        await audit.log(GUILD, ADMIN, "test.action", {"i": i})
    await audit.log(OTHER_GUILD, ADMIN, "test.action", {"i": -1})

    seen: list[int] = []
    before = None
    while True:
        page = await audit.list(GUILD, limit=10, before=before)
        seen.extend(entry.details["i"] for entry in page.items)
        if page.next_cursor is None:
            break
        before = page.next_cursor
    assert seen == list(range(24, -1, -1))

    newest = (await audit.list(GUILD, limit=1)).items[0]
    assert (newest.actor_id, newest.action, newest.created_at) == (ADMIN, "test.action", clock.now)


async def test_list_filters_by_actor_and_action(services: Services) -> None:
    """Filtering by actor or action returns only matching entries of that guild."""
    audit = services.audit
    await audit.log(GUILD, ADMIN, "a", None)
    await audit.log(GUILD, 5, "b", {"x": [1, 2]})
    await audit.log(OTHER_GUILD, 5, "b", None)

    by_actor = (await audit.list(GUILD, actor_id=5)).items
    assert [(e.action, dict(e.details)) for e in by_actor] == [("b", {"x": [1, 2]})]
    assert [e.actor_id for e in (await audit.list(GUILD, action="a")).items] == [ADMIN]
    assert (await audit.list(OTHER_GUILD)).items[0].details == {}
