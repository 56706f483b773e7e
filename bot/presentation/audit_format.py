"""`/audit`: the actions admins can filter by, one line per entry, and the paging buttons' ids.

Entries are written by the services (`bot.services.audit.record`) with an action name and a
details dict; this module turns them into a line an admin can read, with Discord mentions
for members, roles and channels (shown as names by the client, never pinging: the replies
allow no mentions).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from discord.utils import format_dt

from bot.core.paging import b36decode, b36encode
from bot.presentation.history_format import Direction
from bot.presentation.messages import neutralise
from bot.services.audit import AuditEntry
from generation.text import cut_text

__all__ = [
    "ACTIONS",
    "EXPORT_ACTION",
    "PAGE_SIZE",
    "PAGE_TEMPLATE",
    "AuditPageRef",
    "audit_custom_id",
    "entry_text",
    "inline_code",
    "parse_audit_ref",
]

PAGE_SIZE = 10

#: Written by `/history export` itself (no service records reading the history).
EXPORT_ACTION = "history.export"

#: Action names the services write, with a label for the `/audit action:` choices.
ACTIONS: dict[str, str] = {
    "quota.set": "Quota rule set",
    "quota.clear": "Quota rule cleared",
    "quota.reset_member": "Member quota reset",
    "settings.update": "Settings changed",
    "channel.allow": "Channel allowed",
    "channel.disallow": "Channel disallowed",
    "blocklist.add": "Word blocked",
    "blocklist.remove": "Word unblocked",
    "ban": "Member banned",
    "unban": "Member unbanned",
    EXPORT_ACTION: "History exported",
}

PREFIX = "imagine:a:"
PAGE_TEMPLATE = (
    r"imagine:a:(?P<d>[on]):(?P<actor>[0-9a-z]*):(?P<cursor>[0-9a-z]{1,14}):(?P<action>[a-z._]*)"
)


@dataclass(frozen=True)
class AuditPageRef:
    """What a paging button shows: entries older or newer than entry id `cursor`."""

    direction: Direction
    cursor: int
    actor_id: int | None = None
    action: str | None = None


def audit_custom_id(ref: AuditPageRef) -> str:
    """At most ~50 characters: direction, actor, entry id and action name."""
    actor = b36encode(ref.actor_id) if ref.actor_id is not None else ""
    return f"{PREFIX}{ref.direction.value}:{actor}:{b36encode(ref.cursor)}:{ref.action or ''}"


def parse_audit_ref(match: re.Match[str]) -> AuditPageRef:
    """The ref from a custom_id matched by `PAGE_TEMPLATE`; ValueError if malformed."""
    action = match["action"] or None
    if action is not None and action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    return AuditPageRef(
        direction=Direction(match["d"]),
        cursor=b36decode(match["cursor"]),
        actor_id=b36decode(match["actor"]) if match["actor"] else None,
        action=action,
    )


def entry_text(entry: AuditEntry) -> str:
    """`<time> <@actor> Action: details`."""
    label = ACTIONS.get(entry.action, entry.action)
    details = describe_details(entry.action, entry.details)
    line = f"{format_dt(entry.created_at, 'f')} <@{entry.actor_id}> **{label}**"
    return f"{line}: {details}" if details else line


def describe_details(action: str, details: Mapping[str, Any]) -> str:
    """The details of one action in words."""
    if action in ("quota.set", "quota.clear"):
        target = _target(details.get("scope"), details.get("target_id"))
        if action == "quota.clear":
            return target
        return f"{target}: {details.get('limit')} image(s) per {details.get('period')}"
    if action == "quota.reset_member":
        return f"<@{details.get('user_id')}>, {details.get('given_back', 0)} image(s) given back"
    if action in ("channel.allow", "channel.disallow"):
        return f"<#{details.get('channel_id')}>"
    if action in ("blocklist.add", "blocklist.remove"):
        return inline_code(str(details.get("word", "")))
    if action == "ban":
        reason = details.get("reason")
        return f"<@{details.get('user_id')}>" + (f" ({_plain(str(reason))})" if reason else "")
    if action == "unban":
        return f"<@{details.get('user_id')}>"
    if action == EXPORT_ACTION:
        member = details.get("member_id")
        filters = details.get("filters")
        text = f"{details.get('rows', 0)} job(s)"
        text += f" of <@{member}>" if member else ""
        return text + (f" ({_plain(str(filters))})" if filters else "")
    if action == "settings.update":
        return ", ".join(_setting(name, value) for name, value in details.items())
    return ", ".join(f"{name}={_plain(str(value))}" for name, value in details.items())


def _target(scope: object, target_id: object) -> str:
    if scope == "role":
        return f"role <@&{target_id}>"
    if scope == "member":
        return f"member <@{target_id}>"
    if scope == "cap":
        return "server-wide cap"
    return "server default"


def _setting(name: str, value: object) -> str:
    if name == "admin_role_id":
        return f"admin role <@&{value}>" if value is not None else "admin role cleared"
    if name == "nsfw_policy":
        return f"NSFW policy {value}"
    if name == "enabled":
        return "generation switched on" if value else "generation switched off"
    return f"{name}={_plain(str(value))}"


def _plain(text: str) -> str:
    return neutralise(cut_text(text, 200))


def inline_code(text: str) -> str:
    """Inline code that a backtick in the text cannot break out of."""
    return "`` " + text.replace("`", "ˋ")[:200] + " ``"
