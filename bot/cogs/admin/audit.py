"""`/audit` (admins): the server's audit log, newest first, paged with Prev/Next buttons.

The services write an entry for every admin action (quota rules, resets, settings, the
allow-list, blocklist, bans) in the same transaction as the change. The paging buttons are
`DynamicItem`s carrying the filters and the entry id in their custom_id, and re-check that
the presser is still an admin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot.core.paging import CHUNK, PageSlice, newer_page
from bot.presentation.access import ADMIN_HINT, AdminOnlyCog, guild_id_of, reply, require_admin
from bot.presentation.audit_format import (
    ACTIONS,
    PAGE_SIZE,
    PAGE_TEMPLATE,
    PREFIX,
    AuditPageRef,
    audit_custom_id,
    entry_text,
    parse_audit_ref,
)
from bot.presentation.history_format import Direction
from bot.presentation.paging_buttons import PageButton, page_footer
from bot.services.audit import AuditEntry

if TYPE_CHECKING:
    from bot.app import ImagineBot

__all__ = ["AuditCog", "AuditPageButton"]


class AuditPageButton(PageButton, template=PAGE_TEMPLATE):
    """Prev/Next under an audit page; all its state is in the custom_id."""

    cog_name = "Audit"
    command = "/audit"
    prefix = PREFIX
    parse_ref = staticmethod(parse_audit_ref)
    custom_id_of = staticmethod(audit_custom_id)


class AuditCog(AdminOnlyCog, name="Audit"):
    """`/audit [member] [action]` and its paging buttons, over `AuditService`."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(AuditPageButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(AuditPageButton)

    @app_commands.command(name="audit", description="Admin actions on this server, newest first")
    @app_commands.guild_only()
    @app_commands.default_permissions(ADMIN_HINT)
    @app_commands.describe(member="Only actions by this admin", action="Only this kind of action")
    @app_commands.choices(
        action=[app_commands.Choice(name=label, value=name) for name, label in ACTIONS.items()]
    )
    async def audit(
        self,
        interaction: discord.Interaction,
        member: discord.User | None = None,
        action: app_commands.Choice[str] | None = None,
    ) -> None:
        guild_id = guild_id_of(interaction)
        actor_id = member.id if member is not None else None
        action_name = action.value if action is not None else None
        page = await self.bot.services.audit.list(
            guild_id, limit=PAGE_SIZE, actor_id=actor_id, action=action_name
        )
        slice_ = PageSlice(
            items=page.items, has_newer=False, has_older=page.next_cursor is not None
        )
        embed, view = render_page(slice_, actor_id, action_name)
        await reply(interaction, embed=embed, view=view)

    async def turn_page(self, interaction: discord.Interaction, ref: AuditPageRef) -> None:
        """A Prev/Next press: re-check the presser is an admin, then replace the page."""
        guild_id = guild_id_of(interaction)
        await require_admin(interaction)
        audit = self.bot.services.audit
        if ref.direction is Direction.OLDER:
            page = await audit.list(
                guild_id,
                limit=PAGE_SIZE,
                before=ref.cursor,
                actor_id=ref.actor_id,
                action=ref.action,
            )
            slice_ = PageSlice(
                items=page.items, has_newer=True, has_older=page.next_cursor is not None
            )
        else:

            async def fetch(before: int | None) -> tuple[list[AuditEntry], int | None]:
                chunk = await audit.list(
                    guild_id, limit=CHUNK, before=before, actor_id=ref.actor_id, action=ref.action
                )
                return chunk.items, chunk.next_cursor

            slice_ = await newer_page(fetch, _entry_id, _larger, ref.cursor, PAGE_SIZE)
        embed, view = render_page(slice_, ref.actor_id, ref.action)
        await interaction.response.edit_message(
            embed=embed, view=view, allowed_mentions=discord.AllowedMentions.none()
        )


def render_page(
    page: PageSlice[AuditEntry], actor_id: int | None, action: str | None
) -> tuple[discord.Embed, discord.ui.View]:
    """An audit page as an embed, with Prev (newer) and Next (older) buttons."""
    lines = [entry_text(entry) for entry in page.items]
    embed = discord.Embed(
        title="Audit log",
        description="\n".join(lines)[:4096] if lines else "No admin actions recorded.",
        colour=discord.Colour.dark_grey(),
    )
    filters = []
    if actor_id is not None:
        filters.append(f"by one admin ({actor_id})")
    if action is not None:
        filters.append(ACTIONS.get(action, action).lower())
    embed.set_footer(text=page_footer(", ".join(filters)))

    newer = older = None
    if page.items and page.has_newer:
        newer = AuditPageRef(Direction.NEWER, page.items[0].id, actor_id, action)
    if page.items and page.has_older:
        older = AuditPageRef(Direction.OLDER, page.items[-1].id, actor_id, action)
    return embed, AuditPageButton.prev_next(newer, older)


def _entry_id(entry: AuditEntry) -> int:
    return entry.id


def _larger(a: int, b: int) -> bool:
    """Newest first: ids grow with time."""
    return a > b
