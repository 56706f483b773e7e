"""The text of the bot's public messages: queued, running, finished, failed.

Pure functions over plain values, so the wording is tested without Discord. Prompts are
member text: they are shown escaped (no markdown breakage) and shortened to keep messages under
Discord's 2000-character limit; pings are prevented by allowed mentions, not by the text.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from discord.utils import escape_markdown, escape_mentions, format_dt

from bot.services.history import JobView
from generation.params import GenerationParams

__all__ = [
    "MAX_CONTENT",
    "Caption",
    "cancelled_text",
    "caption_of",
    "failed_text",
    "finished_text",
    "moved_text",
    "queued_text",
    "relative_time",
    "running_text",
    "suspended_text",
    "upscale_text",
]

MAX_CONTENT = 2000
_PROMPT_SHOWN = 900


@dataclass(frozen=True)
class Caption:
    """What the messages show of a job: its parameters, who asked, and a label."""

    params: GenerationParams
    user_id: int
    label: str = ""  # e.g. "Variations of image #2", "Reroll"


def caption_of(job: JobView, label: str = "") -> Caption:
    """The caption of a stored job (for `/show`, and for jobs resumed after a restart)."""
    return Caption(job.params, job.user_id, label=label)


def relative_time(when: dt.datetime) -> str:
    """A Discord timestamp each member sees in their own time zone ("in 2 minutes")."""
    return format_dt(when, "R")


def _headline(job: Caption) -> str:
    prompt = job.params.prompt
    if len(prompt) > _PROMPT_SHOWN:
        prompt = prompt[: _PROMPT_SHOWN - 1] + "…"
    # Escaped twice over: markdown so `**` in a prompt cannot unbold it, mentions so the text
    # reads as typed; allowed mentions are still what guarantees nobody is pinged.
    shown = escape_mentions(escape_markdown(prompt))
    label = f" ({job.label})" if job.label else ""
    return f"**{shown}**{label} - <@{job.user_id}>"


def _clip(text: str) -> str:
    return text if len(text) <= MAX_CONTENT else text[: MAX_CONTENT - 1] + "…"


def queued_text(
    job: Caption, position: int, starts_at: dt.datetime | None, note: str | None = None
) -> str:
    """Waiting in the queue: position (1 = next), a relative ETA, and the backend's note
    about the wait (e.g. no GPU worker connected) when it has one."""
    where = "next in line" if position <= 1 else f"position {position} in the queue"
    if note:
        return _clip(f"{_headline(job)}\nWaiting to start: {where}. {note}")
    eta = f", starting {relative_time(starts_at)}" if starts_at is not None else ""
    return _clip(f"{_headline(job)}\nWaiting to start: {where}{eta}")


def running_text(job: Caption, step: int, total: int) -> str:
    """Running: step i of n and a percentage."""
    percent = int(100 * step / total) if total else 0
    return _clip(f"{_headline(job)}\nGenerating: step {step}/{total} ({percent}%)")


def parameters_line(job: Caption, seeds: Sequence[int]) -> str:
    """Seeds and parameters, enough to reproduce the grid with `/imagine`.

    The one renderer of `GenerationParams` for members: a new parameter is shown here.
    """
    params = job.params
    if len(seeds) > 1:
        seed_text = (
            f"seeds {seeds[0]}-{seeds[-1]}"
            if _consecutive(seeds)
            else ("seeds " + ", ".join(str(s) for s in seeds))
        )
    elif seeds:
        seed_text = f"seed {seeds[0]}"
    else:
        seed_text = f"seed {params.seed}"
    parts = [
        seed_text,
        f"{params.width}×{params.height}",
        f"{params.steps} steps",
        f"cfg {params.guidance:g}",
        params.scheduler,
        f"strength {params.strength:g}" if params.strength is not None else "",
    ]
    line = " · ".join(p for p in parts if p)
    if params.negative_prompt:
        negative = escape_mentions(escape_markdown(params.negative_prompt[:300]))
        line += f"\nWithout: {negative}"
    return line


def finished_text(
    job: Caption,
    seeds: Sequence[int],
    *,
    withheld: int = 0,
    warnings: Sequence[str] = (),
    note: str = "",
) -> str:
    """The grid's caption: prompt, requester, seeds and parameters, and anything withheld."""
    lines = [_headline(job), parameters_line(job, seeds)]
    if withheld:
        images = "image was" if withheld == 1 else "images were"
        lines.append(
            f"{withheld} {images} flagged by the safety checker and not posted; "
            "they were not counted against your quota."
        )
    lines.extend(f"Note: {warning}" for warning in warnings)
    if note:
        lines.append(note)
    return _clip("\n".join(lines))


def upscale_text(job: Caption, index: int) -> str:
    """The caption of one image posted alone (U button)."""
    return _clip(f"{_headline(job)}\nImage #{index}")


def moved_text(job: Caption, where: str) -> str:
    """The old "queued" message once the result was posted elsewhere (`where`: a link)."""
    return _clip(f"{_headline(job)}\nFinished: {where}")


def failed_text(job: Caption, error: str, refunded: int) -> str:
    """A job that produced nothing; says what went wrong and that nothing was charged."""
    refund = f" The {refunded} image(s) were not counted against your quota." if refunded else ""
    return _clip(f"{_headline(job)}\nFailed: {error}.{refund}".replace("..", "."))


def cancelled_text(job: Caption) -> str:
    """A job cancelled before it started."""
    return _clip(f"{_headline(job)}\nCancelled. Nothing was counted against your quota.")


def _consecutive(seeds: Sequence[int]) -> bool:
    return all(b == a + 1 for a, b in itertools.pairwise(seeds))


def suspended_text(job: Caption) -> str:
    """The bot is shutting down while the job waits: it keeps its place for the next start."""
    return _clip(
        f"{_headline(job)}\nThe bot is restarting: this job keeps its place in the queue and "
        "starts when the bot is back (usually within a minute)."
    )
