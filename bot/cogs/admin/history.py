"""`/history list` and `/history export`: members review their own jobs, admins anyone's.

`/history list` answers privately with a page of jobs and Prev/Next buttons. The buttons are
`DynamicItem`s whose custom_id holds the filters and a keyset cursor (`bot.history_format`),
so they keep working after a restart; each press re-checks who may see what. A member only
ever lists their own jobs; an admin lists one member's (`member`) or the whole server's.
Every query is limited to the server the command was used in.

`/history export` (admins) attaches the server's history, filtered the same way, as CSV.
"""

from __future__ import annotations

import datetime as dt
import io
from contextlib import aclosing
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.paging import CHUNK, PageSlice, newer_page
from bot.core.threads import Threads
from bot.db.models import JobStatus
from bot.errors import MemberError
from bot.presentation.access import (
    NotAdmin,
    admin_only,
    guild_id_of,
    reply,
    require_admin,
)
from bot.presentation.audit_format import EXPORT_ACTION
from bot.presentation.delivery import upload_limit
from bot.presentation.history_format import (
    MAX_TEXT_FILTER,
    PAGE_SIZE,
    PAGE_TEMPLATE,
    PREFIX,
    Direction,
    HistoryQuery,
    PageRef,
    QueryError,
    entry_text,
    page_custom_id,
    parse_page_ref,
)
from bot.presentation.paging_buttons import PageButton, page_footer
from bot.services.history import CsvExport, CsvWriter, Cursor, HistoryService, JobView

if TYPE_CHECKING:
    from bot.app import ImagineBot

__all__ = ["HistoryCog", "HistoryPageButton"]

STATUS_CHOICES = [app_commands.Choice(name=s.value, value=s.value) for s in JobStatus]
NOT_YOURS = "Only server admins can see other members' history."
EXPORT_TEXT_MAX = 200


class HistoryPageButton(PageButton, template=PAGE_TEMPLATE):
    """Prev/Next under a history page; all its state is in the custom_id."""

    cog_name = "History"
    command = "/history list"
    prefix = PREFIX
    parse_ref = staticmethod(parse_page_ref)
    custom_id_of = staticmethod(page_custom_id)


class HistoryCog(commands.Cog, name="History"):
    """`/history list|export` and the paging buttons, over `HistoryService`."""

    history = app_commands.Group(
        name="history", description="Jobs made on this server", guild_only=True
    )

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(HistoryPageButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(HistoryPageButton)

    # -- /history list ----------------------------------------------------------------------

    @history.command(name="list", description="Your jobs, newest first (admins: anyone's)")
    @app_commands.describe(
        member="Admins: whose jobs (default for admins: the whole server)",
        text=f"Only prompts containing this text (up to {MAX_TEXT_FILTER} characters)",
        status="Only jobs with this status",
        since="From this day on, YYYY-MM-DD (UTC)",
        until="Up to and including this day, YYYY-MM-DD (UTC)",
    )
    @app_commands.choices(status=STATUS_CHOICES)
    async def list_jobs(
        self,
        interaction: discord.Interaction,
        member: discord.User | None = None,
        text: app_commands.Range[str, 1, MAX_TEXT_FILTER] | None = None,
        status: app_commands.Choice[str] | None = None,
        since: app_commands.Range[str, 10, 10] | None = None,
        until: app_commands.Range[str, 10, 10] | None = None,
    ) -> None:
        guild_id = guild_id_of(interaction)
        user_id = await self._subject(interaction, member)
        query = _query(user_id, text, status, since, until)
        page = await self._older(guild_id, query, None)
        embed, view = render_page(query, page, interaction.user.id)
        await reply(interaction, embed=embed, view=view)

    async def turn_page(self, interaction: discord.Interaction, ref: PageRef) -> None:
        """A Prev/Next press: re-check access, then replace the page in the same message."""
        guild_id = guild_id_of(interaction)
        if ref.query.user_id != interaction.user.id:
            await _require_admin(interaction)
        if ref.direction is Direction.OLDER:
            page = await self._older(guild_id, ref.query, ref.cursor)
        else:
            page = await self._newer(guild_id, ref.query, ref.cursor)
        embed, view = render_page(ref.query, page, interaction.user.id)
        await interaction.response.edit_message(
            embed=embed, view=view, allowed_mentions=discord.AllowedMentions.none()
        )

    async def _subject(
        self, interaction: discord.Interaction, member: discord.abc.User | None
    ) -> int | None:
        """Whose jobs to list: the invoker's own, or (admins) the member's or everyone's."""
        me = interaction.user.id
        if member is not None and member.id == me:
            return me
        if member is not None:
            await _require_admin(interaction)
            return member.id
        try:
            await require_admin(interaction)
        except NotAdmin:
            return me
        return None

    async def _older(
        self, guild_id: int, query: HistoryQuery, before: Cursor | None
    ) -> PageSlice[JobView]:
        page = await self.bot.services.history.list(
            guild_id, query.filters(), limit=PAGE_SIZE, before=before
        )
        return PageSlice(
            items=page.items, has_newer=before is not None, has_older=page.next_cursor is not None
        )

    async def _newer(
        self, guild_id: int, query: HistoryQuery, first: Cursor
    ) -> PageSlice[JobView]:
        filters = query.filters()

        async def fetch(before: Cursor | None) -> tuple[list[JobView], Cursor | None]:
            page = await self.bot.services.history.list(
                guild_id, filters, limit=CHUNK, before=before
            )
            return page.items, page.next_cursor

        return await newer_page(fetch, _key, _sorts_before, first, PAGE_SIZE)

    # -- /history export --------------------------------------------------------------------

    @history.command(name="export", description="The server's history as a CSV file (admins)")
    @app_commands.describe(
        member="Only this member's jobs",
        text="Only prompts containing this text",
        status="Only jobs with this status",
        since="From this day on, YYYY-MM-DD (UTC)",
        until="Up to and including this day, YYYY-MM-DD (UTC)",
    )
    @app_commands.choices(status=STATUS_CHOICES)
    @admin_only()
    async def export(
        self,
        interaction: discord.Interaction,
        member: discord.User | None = None,
        text: app_commands.Range[str, 1, EXPORT_TEXT_MAX] | None = None,
        status: app_commands.Choice[str] | None = None,
        since: app_commands.Range[str, 10, 10] | None = None,
        until: app_commands.Range[str, 10, 10] | None = None,
    ) -> None:
        guild_id = guild_id_of(interaction)
        user_id = member.id if member is not None else None
        query = _query(user_id, text, status, since, until, text_max=EXPORT_TEXT_MAX)
        await interaction.response.defer(ephemeral=True, thinking=True)
        export = await export_history(
            self.bot.services.history, self.bot.threads, guild_id, query, upload_limit(interaction)
        )
        name = f"history-{guild_id}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}.csv"
        if export.compressed:
            name += ".gz"
        if len(export.data) > upload_limit(interaction):
            raise MemberError(
                "The export is too big to upload even compressed: narrow it with "
                "`since`/`until` or `member`."
            )
        described = query.describe()
        details = {"rows": export.rows, "member_id": user_id, "filters": described or None}
        await self.bot.services.audit.log(guild_id, interaction.user.id, EXPORT_ACTION, details)
        summary = f"{export.rows} job(s)" + (f" ({described})" if described else "")
        await reply(
            interaction,
            f"History export: {summary}, newest first.",
            file=discord.File(io.BytesIO(export.data), filename=name),
        )


async def export_history(
    history: HistoryService, threads: Threads, guild_id: int, query: HistoryQuery, limit: int
) -> CsvExport:
    """The guild's history matching `query` as a CSV file, gzipped when over `limit` bytes.

    The rows come as batches of Core rows; each batch is written into the CSV, and the file
    compressed, in the thread helper, so a big export never holds the event loop.
    """
    writer = CsvWriter()
    async with aclosing(history.export_batches(guild_id, query.filters())) as batches:
        async for batch in batches:
            await threads.run(writer.write, batch)
    return await threads.run(writer.finish, limit)


def render_page(
    query: HistoryQuery, page: PageSlice[JobView], viewer_id: int
) -> tuple[discord.Embed, discord.ui.View]:
    """A history page as an embed, with Prev (newer) and Next (older) buttons."""
    if query.user_id is None:
        title = "Server history"
    elif query.user_id == viewer_id:
        title = "Your history"
    else:
        title = "Member history"
    entries = [entry_text(job, show_member=query.user_id is None) for job in page.items]
    description = "\n\n".join(entries) if entries else "No jobs match."
    if query.user_id is not None and query.user_id != viewer_id:
        description = f"<@{query.user_id}>\n\n{description}"
    embed = discord.Embed(
        title=title, description=description[:4096], colour=discord.Colour.blurple()
    )
    footer = page_footer(query.describe())

    newer = older = None
    if page.items and page.has_newer:
        newer = PageRef(Direction.NEWER, query, page.items[0].cursor)
    if page.items and page.has_older:
        older = PageRef(Direction.OLDER, query, page.items[-1].cursor)
    if any(ref is not None and page_custom_id(ref) is None for ref in (newer, older)):
        footer += " The text filter is too long for paging buttons; shorten it."
    embed.set_footer(text=footer)
    return embed, HistoryPageButton.prev_next(newer, older)


def _query(
    user_id: int | None,
    text: str | None,
    status: app_commands.Choice[str] | None,
    since: str | None,
    until: str | None,
    *,
    text_max: int | None = None,
) -> HistoryQuery:
    status_value = status.value if status is not None else None
    try:
        return HistoryQuery.build(user_id, text, status_value, since, until, text_max=text_max)
    except QueryError as exc:
        raise MemberError(str(exc)) from None


async def _require_admin(interaction: discord.Interaction) -> None:
    try:
        await require_admin(interaction)
    except NotAdmin:
        raise NotAdmin(NOT_YOURS) from None


def _key(job: JobView) -> Cursor:
    return job.cursor


def _sorts_before(a: Cursor, b: Cursor) -> bool:
    """Newest first: later creation time, then (same time) larger id."""
    return (a.created_at, a.job_id) > (b.created_at, b.job_id)
