"""`/quota`: admins set, clear and list quota rules and give members their images back;
members see their own quota, admins anyone's. `/quota fast` and `/quota fast-clear` set the
fast-time allowance (GPU seconds of fast jobs per period, see `bot.services.tiers`) with the
same scopes and precedence, less the cap.

Which rule wins (done by `QuotaService`): a member rule, else the most generous rule of the
member's roles, else the server default, else the bot's configured default. A server-wide
cap (scope `cap`) limits the whole server's total on top.

The `/quota` group is visible to everyone (members use `/quota show`), so it carries no
`default_permissions` hint; each admin subcommand is checked with `admin_only()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.db.models import Period, QuotaScope
from bot.errors import MemberError
from bot.presentation.access import (
    NotAdmin,
    admin_only,
    guild_id_of,
    reply,
    require_admin,
    role_ids_of,
)
from bot.presentation.fast_time import fast_time_text
from bot.presentation.messages import relative_time
from bot.services.quota import QuotaRule, QuotaSource, QuotaStatus
from bot.services.tiers import FastTimeRuleView

if TYPE_CHECKING:
    from bot.app import ImagineBot

__all__ = ["QuotaCog"]

MAX_LIMIT = 1_000_000

SCOPE_CHOICES = [
    app_commands.Choice(name="server: the default for every member", value=QuotaScope.SERVER.value),
    app_commands.Choice(name="role: members with a role", value=QuotaScope.ROLE.value),
    app_commands.Choice(
        name="member: one member (beats role rules)", value=QuotaScope.MEMBER.value
    ),
    app_commands.Choice(name="cap: the whole server's total", value=QuotaScope.CAP.value),
]
PERIOD_CHOICES = [
    app_commands.Choice(name="per day (resets 00:00 UTC)", value=Period.DAY.value),
    app_commands.Choice(name="per week (resets Monday 00:00 UTC)", value=Period.WEEK.value),
]

FAST_SCOPE_CHOICES = SCOPE_CHOICES[:3]
#: Largest fast-time allowance an admin may set: a week of one GPU.
MAX_FAST_SECONDS = 7 * 24 * 3600

Target = discord.Member | discord.User | discord.Role


class QuotaCog(commands.Cog, name="Quota"):
    """`/quota set|clear|list|reset|show`, over `QuotaService`."""

    quota = app_commands.Group(
        name="quota", description="Image quotas on this server", guild_only=True
    )

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @quota.command(name="set", description="Set how many images a scope may make per period")
    @app_commands.describe(
        scope="Who the rule applies to",
        limit="Images per period (0 forbids generating)",
        target="The role (scope role) or member (scope member); empty for server and cap",
        period="Per day or per week (default: per day)",
    )
    @app_commands.choices(scope=SCOPE_CHOICES, period=PERIOD_CHOICES)
    @admin_only()
    async def set_rule(
        self,
        interaction: discord.Interaction,
        scope: app_commands.Choice[str],
        limit: app_commands.Range[int, 0, MAX_LIMIT],
        target: Target | None = None,
        period: app_commands.Choice[str] | None = None,
    ) -> None:
        guild_id = guild_id_of(interaction)
        rule_scope = QuotaScope(scope.value)
        target_id = _target_id(rule_scope, target, guild_id)
        rule_period = Period(period.value) if period is not None else Period.DAY
        rule = await self.bot.services.quota.set_rule(
            guild_id, rule_scope, target_id, limit, rule_period, actor_id=interaction.user.id
        )
        await reply(
            interaction,
            f"Quota set: {_who(rule.scope, rule.target_id)} may make "
            f"**{_amount(rule.limit, rule.period)}**.\n-# {PRECEDENCE}",
        )

    @quota.command(name="clear", description="Remove a quota rule")
    @app_commands.describe(
        scope="Which rule to remove",
        target="The role (scope role) or member (scope member); empty for server and cap",
    )
    @app_commands.choices(scope=SCOPE_CHOICES)
    @admin_only()
    async def clear_rule(
        self,
        interaction: discord.Interaction,
        scope: app_commands.Choice[str],
        target: Target | None = None,
    ) -> None:
        guild_id = guild_id_of(interaction)
        rule_scope = QuotaScope(scope.value)
        target_id = _target_id(rule_scope, target, guild_id)
        removed = await self.bot.services.quota.clear_rule(
            guild_id, rule_scope, target_id, actor_id=interaction.user.id
        )
        await _report_clear(interaction, removed, "quota rule", _who(rule_scope, target_id))

    @quota.command(name="fast", description="Set how many GPU seconds of fast jobs a scope gets")
    @app_commands.describe(
        scope="Who the allowance applies to",
        seconds="GPU seconds of fast jobs per period (0: relax mode only)",
        target="The role (scope role) or member (scope member); empty for server",
        period="Per day or per week (default: the bot's fast-time period)",
    )
    @app_commands.choices(scope=FAST_SCOPE_CHOICES, period=PERIOD_CHOICES)
    @admin_only()
    async def set_fast(
        self,
        interaction: discord.Interaction,
        scope: app_commands.Choice[str],
        seconds: app_commands.Range[float, 0, MAX_FAST_SECONDS],
        target: Target | None = None,
        period: app_commands.Choice[str] | None = None,
    ) -> None:
        guild_id = guild_id_of(interaction)
        rule_scope = QuotaScope(scope.value)
        target_id = _target_id(rule_scope, target, guild_id)
        rule = await self.bot.services.tiers.set_rule(
            guild_id,
            rule_scope,
            target_id,
            seconds,
            period.value if period is not None else None,
            actor_id=interaction.user.id,
        )
        await reply(
            interaction,
            f"Fast time set: {_who(rule.scope, rule.target_id)} get "
            f"**{_fast_amount(rule.seconds, rule.period)}**; past that, their jobs run in "
            f"relax mode.\n-# {PRECEDENCE}",
        )

    @quota.command(name="fast-clear", description="Remove a fast-time allowance")
    @app_commands.describe(
        scope="Which allowance to remove",
        target="The role (scope role) or member (scope member); empty for server",
    )
    @app_commands.choices(scope=FAST_SCOPE_CHOICES)
    @admin_only()
    async def clear_fast(
        self,
        interaction: discord.Interaction,
        scope: app_commands.Choice[str],
        target: Target | None = None,
    ) -> None:
        guild_id = guild_id_of(interaction)
        rule_scope = QuotaScope(scope.value)
        target_id = _target_id(rule_scope, target, guild_id)
        removed = await self.bot.services.tiers.clear_rule(
            guild_id, rule_scope, target_id, actor_id=interaction.user.id
        )
        await _report_clear(
            interaction, removed, "fast-time allowance", _who(rule_scope, target_id)
        )

    @quota.command(name="list", description="Every quota rule on this server")
    @admin_only()
    async def list_rules(self, interaction: discord.Interaction) -> None:
        guild_id = guild_id_of(interaction)
        rules = await self.bot.services.quota.list_rules(guild_id)
        lines = [f"{_who(rule.scope, rule.target_id)}: {_amount(rule.limit, rule.period)}"
                 for rule in rules]
        lines.append(f"Bot default (config): {self._config_default()}")
        fast_rules = await self.bot.services.tiers.list_rules(guild_id)
        lines.extend(_fast_rule_line(rule) for rule in fast_rules)
        embed = discord.Embed(
            title="Quota rules",
            description="\n".join(lines)[:4000],
            colour=discord.Colour.blurple(),
        )
        embed.set_footer(text=PRECEDENCE)
        await reply(interaction, embed=embed)

    @quota.command(name="reset", description="Give a member back the images used this period")
    @app_commands.describe(member="Whose usage to reset")
    @admin_only()
    async def reset_member(self, interaction: discord.Interaction, member: discord.Member) -> None:
        guild_id = guild_id_of(interaction)
        given = await self.bot.services.quota.reset_member(
            guild_id,
            member.id,
            actor_id=interaction.user.id,
            role_ids=role_ids_of(member, guild_id),
        )
        await reply(
            interaction,
            f"Reset {member.mention}'s usage: {given} image(s) given back for the current "
            "period, and their fast time.",
        )

    @quota.command(name="show", description="A quota: yours, or (admins) any member's")
    @app_commands.describe(member="Whose quota to show (admins only; default: yours)")
    async def show(
        self, interaction: discord.Interaction, member: discord.Member | None = None
    ) -> None:
        guild_id = guild_id_of(interaction)
        subject = member or interaction.user
        if subject.id != interaction.user.id:
            try:
                await require_admin(interaction)
            except NotAdmin:
                raise NotAdmin("Only server admins can see other members' quotas.") from None
        role_ids = role_ids_of(subject, guild_id)
        quota = self.bot.services.quota
        status = await quota.status(guild_id, subject.id, role_ids)
        rules = await quota.list_rules(guild_id) if status.source is QuotaSource.ROLE else []
        fast = await self.bot.services.tiers.status(guild_id, subject.id, role_ids)
        description = quota_text(subject.id, status, _winning_role(rules, role_ids))
        embed = discord.Embed(
            title="Image quota",
            description=f"{description}\n{fast_time_text(fast)}",
            colour=discord.Colour.blurple(),
        )
        await reply(interaction, embed=embed)

    def _config_default(self) -> str:
        quotas = self.bot.settings.quotas
        if quotas.default_limit is None:
            return "unlimited"
        return _amount(quotas.default_limit, Period(quotas.default_period))


PRECEDENCE = (
    "Which rule applies: a member rule, else the member's most generous role rule, "
    "else the server default, else the bot's default; the cap limits the server's total."
)


def _target_id(scope: QuotaScope, target: Target | None, guild_id: int) -> int | None:
    """The rule's target id, checked against the scope; MemberError says what is wrong."""
    if scope in (QuotaScope.SERVER, QuotaScope.CAP):
        if target is not None:
            raise MemberError(
                f"A `{scope.value}` rule applies to the whole server: leave `target` empty "
                "(use scope `role` or `member` to limit someone in particular)."
            )
        return None
    if target is None:
        raise MemberError(f"Scope `{scope.value}` needs a `target`: the {scope.value} to limit.")
    if scope is QuotaScope.ROLE:
        if not isinstance(target, discord.Role):
            raise MemberError("Scope `role` needs a role as `target`, not a member.")
        if target.id == guild_id:
            raise MemberError("@everyone is every member: use scope `server` for that.")
        return target.id
    if isinstance(target, discord.Role):
        raise MemberError("Scope `member` needs a member as `target`, not a role.")
    return target.id


async def _report_clear(
    interaction: discord.Interaction, removed: bool, what: str, who: str
) -> None:
    """Say whether a `clear` removed `what` (a rule) for `who`."""
    if removed:
        await reply(interaction, f"Removed the {what} for {who}.")
    else:
        await reply(interaction, f"There was no {what} for {who}; nothing changed.")


def _who(scope: QuotaScope, target_id: int | None) -> str:
    if scope is QuotaScope.ROLE:
        return f"members with <@&{target_id}>"
    if scope is QuotaScope.MEMBER:
        return f"<@{target_id}>"
    if scope is QuotaScope.CAP:
        return "the whole server (cap)"
    return "every member (server default)"


def _amount(limit: int, period: Period) -> str:
    return f"{limit} image{'s' if limit != 1 else ''} per {period.value}"


def _fast_amount(seconds: float | None, period: Period) -> str:
    if seconds is None:
        return "unlimited fast time"
    return f"{seconds:g} GPU seconds of fast time per {period.value}"


def _fast_rule_line(rule: FastTimeRuleView) -> str:
    amount = _fast_amount(rule.seconds, rule.period)
    return f"Fast time, {_who(rule.scope, rule.target_id)}: {amount}"


def _winning_role(rules: list[QuotaRule], role_ids: tuple[int, ...]) -> int | None:
    """The role whose rule applies: the most generous of the member's role rules (like
    `QuotaService`: highest limit, a daily rule winning a tie since it renews sooner)."""
    mine = [r for r in rules if r.scope is QuotaScope.ROLE and r.target_id in role_ids]
    if not mine:
        return None
    best = max(mine, key=lambda r: (r.limit, r.period is Period.DAY))
    return best.target_id


def quota_text(user_id: int, status: QuotaStatus, role_id: int | None = None) -> str:
    """A member's quota in words: limit and its source, used, left, the reset time."""
    source = {
        QuotaSource.MEMBER: "a rule for this member",
        QuotaSource.ROLE: f"the role <@&{role_id}>" if role_id else "a role rule",
        QuotaSource.SERVER: "the server default",
        QuotaSource.CONFIG: "the bot's default",
        QuotaSource.CAP: "the server cap",
    }[status.source]
    span = "today" if status.period is Period.DAY else "this week"
    lines = [f"<@{user_id}>"]
    if status.limit is None:
        lines.append(f"Limit: none (unlimited), from {source}")
    else:
        lines.append(f"Limit: **{_amount(status.limit, status.period)}**, from {source}")
    left = "" if status.remaining is None else f", **{status.remaining}** left"
    lines.append(f"Used {span}: **{status.used}**{left}")
    resets = status.resets_at
    lines.append(f"Resets {relative_time(resets)} ({discord.utils.format_dt(resets, 'f')})")
    if status.cap is not None:
        cap = status.cap
        lines.append(
            f"Server-wide cap: {cap.used} of {_amount(cap.limit, cap.period)} used, "
            f"resets {relative_time(cap.resets_at)}"
        )
    return "\n".join(lines)
