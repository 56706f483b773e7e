"""The invite URL asks for exactly the permissions the bot needs, and the README lists them."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from bot.presentation.permissions import REQUIRED_PERMISSIONS, invite_url, permission_names

README = Path(__file__).resolve().parents[3] / "README.md"


def test_invite_url_scopes_and_permissions() -> None:
    query = parse_qs(urlsplit(invite_url(1234)).query)
    assert query["client_id"] == ["1234"]
    assert query["scope"] == ["bot applications.commands"]
    assert query["permissions"] == [str(REQUIRED_PERMISSIONS.value)]


def test_readme_lists_the_same_permissions() -> None:
    text = " ".join(README.read_text().split())
    names = permission_names()
    assert names == [
        "View Channels",
        "Send Messages",
        "Embed Links",
        "Attach Files",
        "Send Messages in Threads",
    ]
    for name in names:
        assert name in text
    assert f"permissions integer {REQUIRED_PERMISSIONS.value}" in text
