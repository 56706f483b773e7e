"""Admin and member controls over the storage services: one cog module per feature.

| command                                   | who            | module        |
|-------------------------------------------|----------------|---------------|
| /quota set, clear, list, reset            | admins         | quota.py      |
| /quota show [member]                      | own; admins any| quota.py      |
| /history list [member text status dates]  | own; admins any| history.py    |
| /history export                           | admins         | history.py    |
| /show job                                 | owner, admins  | show.py       |
| /blocklist add, remove, list              | admins         | moderation.py |
| /ban, /unban, /bans                       | admins         | moderation.py |
| /channels allow, disallow, list           | admins         | moderation.py |
| /settings show, nsfw, admin_role, generation | admins      | settings.py   |
| /audit [member action]                    | admins         | audit.py      |

"admins": Manage Server (or Administrator), or the role set with `/settings admin_role`;
checked by the bot on every use: by `Cog.interaction_check` for the cogs that are for admins
throughout (`access.AdminOnlyCog`: moderation, settings, audit), by `access.admin_only` on
the admin subcommands of mixed cogs (quota, history). Everything is scoped to the server
the command is used in. Replies are ephemeral (except `/show`) and ping nobody.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from discord.ext import commands

if TYPE_CHECKING:
    from bot.app import ImagineBot

__all__ = ["admin_cogs"]


def admin_cogs() -> tuple[Callable[[ImagineBot], commands.Cog], ...]:
    """The cog factories of this package, for `bot.app.default_cogs`."""
    from bot.cogs.admin.audit import AuditCog
    from bot.cogs.admin.history import HistoryCog
    from bot.cogs.admin.moderation import ModerationCog
    from bot.cogs.admin.quota import QuotaCog
    from bot.cogs.admin.settings import SettingsCog
    from bot.cogs.admin.show import ShowCog

    return (QuotaCog, HistoryCog, ShowCog, ModerationCog, SettingsCog, AuditCog)
