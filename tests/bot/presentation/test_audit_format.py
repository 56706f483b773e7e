"""`/audit`: how entries read and what its paging buttons carry."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from bot.presentation.audit_format import (
    ACTIONS,
    PAGE_TEMPLATE,
    AuditPageRef,
    audit_custom_id,
    describe_details,
    entry_text,
    inline_code,
    parse_audit_ref,
)
from bot.presentation.history_format import Direction
from bot.services.audit import AuditEntry


@pytest.mark.parametrize(
    ("action", "details", "expected"),
    [
        ("quota.set", {"scope": "role", "target_id": 7, "limit": 5, "period": "day"},
         "role <@&7>: 5 image(s) per day"),
        ("quota.set", {"scope": "cap", "target_id": None, "limit": 50, "period": "week"},
         "server-wide cap: 50 image(s) per week"),
        ("quota.clear", {"scope": "member", "target_id": 8}, "member <@8>"),
        ("quota.reset_member", {"user_id": 8, "given_back": 3}, "<@8>, 3 image(s) given back"),
        ("channel.allow", {"channel_id": 9}, "<#9>"),
        ("blocklist.add", {"word": "ogre"}, "`` ogre ``"),
        ("ban", {"user_id": 8, "reason": "@everyone *spam*"}, "<@8> (@\u200beveryone \\*spam\\*)"),
        ("unban", {"user_id": 8}, "<@8>"),
        ("settings.update", {"nsfw_policy": "spoiler", "admin_role_id": None},
         "NSFW policy spoiler, admin role cleared"),
        ("settings.update", {"enabled": False}, "generation switched off"),
        ("something.new", {"a": 1}, "a=1"),
    ],
)
def test_details_read_as_words(action: str, details: dict[str, object], expected: str) -> None:
    """Each action's details become a short phrase with mentions, escaped where free text."""
    assert describe_details(action, details) == expected


def test_entry_has_time_actor_and_label() -> None:
    """An entry line: Discord timestamp, the admin, the action's label."""
    moment = datetime(2026, 3, 11, tzinfo=UTC)
    entry = AuditEntry(1, 2, 3, "unban", {"user_id": 4}, moment)
    assert entry_text(entry) == f"<t:{int(moment.timestamp())}:f> <@3> **Member unbanned**: <@4>"


@pytest.mark.parametrize(
    "ref",
    [
        AuditPageRef(Direction.OLDER, 12345),
        AuditPageRef(Direction.NEWER, 1, actor_id=2**63 - 1, action="quota.reset_member"),
    ],
)
def test_audit_custom_id_round_trips(ref: AuditPageRef) -> None:
    """The paging ref comes back from its custom_id, well within 100 characters."""
    custom_id = audit_custom_id(ref)
    match = re.fullmatch(PAGE_TEMPLATE, custom_id)
    assert match is not None and len(custom_id) <= 100
    assert parse_audit_ref(match) == ref


def test_audit_custom_id_rejects_unknown_actions() -> None:
    """A custom_id naming an action the bot does not know is refused."""
    match = re.fullmatch(PAGE_TEMPLATE, "imagine:a:o::1:drop.tables")
    assert match is not None
    with pytest.raises(ValueError):
        parse_audit_ref(match)


def test_every_action_has_a_label_that_fits_a_choice() -> None:
    """Action labels are valid slash-command choice names (1-100 characters)."""
    assert all(1 <= len(label) <= 100 for label in ACTIONS.values())


def test_inline_code_cannot_be_broken_out_of() -> None:
    """Backticks in a word cannot end the code span early."""
    assert inline_code("a``b") == "`` aˋˋb ``"
