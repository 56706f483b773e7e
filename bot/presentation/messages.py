"""The text of the bot's public messages: queued, running, finished, failed.

Pure functions over plain values, so the wording is tested without Discord. Prompts are
member text: they are shown neutralised (`neutralise`: markdown, mentions, links) and shortened
between whole characters so that every message fits Discord's 2000 characters; when room is
short the prompt's echo gives way, never the status, parameters or notes after it. Pings are
prevented by allowed mentions, not by the text.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from discord.utils import escape_mentions, format_dt

from bot.services.history import JobView
from generation.params import GenerationParams
from generation.text import cut_text

__all__ = [
    "DESCRIBE_LABEL",
    "MAX_CONTENT",
    "Caption",
    "cancelled_text",
    "caption_of",
    "describe_text",
    "describing_text",
    "failed_text",
    "finished_text",
    "keycap",
    "moved_text",
    "neutralise",
    "queued_text",
    "relative_time",
    "running_text",
    "shown",
    "suspended_text",
    "upscale_text",
]

MAX_CONTENT = 2000
_PROMPT_SHOWN = 900
_NEGATIVE_SHOWN = 300
# Characters with a meaning in Discord's markdown: emphasis, code, spoilers, quotes,
# headings, lists, masked links, and `<...>` (channel mentions, timestamps, emoji).
_MARKDOWN_CHAR = re.compile(r"[\\*_~`|>#\-\[\]()<]")
# Every "://" gets a zero-width space inside: Discord makes no link of it then.
_LINK = re.compile(r":(?=//)")


@dataclass(frozen=True)
class Caption:
    """What the messages show of a job: its parameters, who asked, and a label."""

    params: GenerationParams
    user_id: int
    label: str = ""  # e.g. "Variations of image #2", "Reroll"
    #: The job's tier (`fast`/`relax`), shown with the parameters; None: not shown.
    tier: str | None = None
    #: Why the job runs in relax when fast was asked for (or the default), for the member.
    tier_note: str | None = None


def caption_of(job: JobView, label: str = "") -> Caption:
    """The caption of a stored job (for `/show`, and for jobs resumed after a restart)."""
    return Caption(job.params, job.user_id, label=label, tier=job.tier.value)


def relative_time(when: dt.datetime) -> str:
    """A Discord timestamp each member sees in their own time zone ("in 2 minutes")."""
    return format_dt(when, "R")


def neutralise(text: str) -> str:
    """Member text made inert for a message: markdown shown as typed, mentions broken, links
    made unclickable.

    Every ASCII character that Discord's markdown gives a meaning to is backslash-escaped
    (Discord hides a backslash before punctuation, so the text looks as typed).
    `discord.utils.escape_markdown` is not enough: it escapes a masked link
    `[a](http://b)` only at its start, leaving markdown inside it active. Allowed mentions
    still guarantee nobody is pinged; this keeps the text reading as typed.
    """
    text = _MARKDOWN_CHAR.sub(r"\\\g<0>", text)
    text = _LINK.sub(":\u200b", text)
    return escape_mentions(text)


def shown(text: str, limit: int) -> str:
    """Member text neutralised and shortened (between whole characters) to at most `limit`
    characters once escaped."""
    if limit <= 0:
        return ""
    result = neutralise(text)
    if len(result) <= limit:
        return result
    low, high = 0, min(len(text), limit)  # raw code points to keep; escaping only adds
    best = ""
    while low <= high:
        middle = (low + high) // 2
        candidate = neutralise(cut_text(text, middle)) if middle else ""
        if len(candidate) <= limit:
            best, low = candidate, middle + 1
        else:
            high = middle - 1
    return best


#: The label of a /describe job: it has no prompt, so the label is its headline.
DESCRIBE_LABEL = "/describe"


def _headline(job: Caption, room: int = MAX_CONTENT) -> str:
    """Prompt (bold), label and requester in at most `room` characters: the prompt is the
    part that gives way. A /describe job has no prompt: its headline names the command."""
    if job.label == DESCRIBE_LABEL and not job.params.prompt:
        return f"**{DESCRIBE_LABEL}** - <@{job.user_id}>"
    label = f" ({job.label})" if job.label else ""
    frame = f"****{label} - <@{job.user_id}>"
    prompt = job.params.prompt
    # An image prompt may come without text.
    text = shown(prompt, min(_PROMPT_SHOWN, room - len(frame))) if prompt else "(the image alone)"
    return f"**{text}**{label} - <@{job.user_id}>"


def _compose(job: Caption, *lines: str) -> str:
    """The headline and `lines`, within Discord's limit: the prompt's echo is shortened
    first, so the status, parameters and notes after it are kept whole."""
    rest = "\n".join(line for line in lines if line)
    room = MAX_CONTENT - len(rest) - 1
    return _clip(f"{_headline(job, room)}\n{rest}" if rest else _headline(job))


def _clip(text: str) -> str:
    return cut_text(text, MAX_CONTENT)


def queued_text(
    job: Caption, position: int, starts_at: dt.datetime | None, note: str | None = None
) -> str:
    """Waiting in the queue: position (1 = next), a relative ETA, and the backend's note
    about the wait (e.g. no GPU worker connected) when it has one.

    A relax job gets no promise: fast jobs submitted after it still go first, so it is told
    how many jobs are ahead now and the earliest it could start."""
    if job.tier == "relax":
        ahead = max(position - 1, 0)
        now = "no job is ahead of it now" if not ahead else (
            f"{ahead} job{'s are' if ahead != 1 else ' is'} ahead of it now"
        )
        earliest = f", so not before {relative_time(starts_at)}" if starts_at is not None else ""
        status = (
            f"Waiting in relax mode: {now}{earliest}. Fast jobs go first, including ones "
            "submitted later, so it may wait longer."
        )
        return _compose(job, status, note or "", _tier_note(job))
    where = "next in line" if position <= 1 else f"position {position} in the queue"
    if note:
        return _compose(job, f"Waiting to start: {where}. {note}", _tier_note(job))
    eta = f", starting {relative_time(starts_at)}" if starts_at is not None else ""
    return _compose(job, f"Waiting to start: {where}{eta}", _tier_note(job))


def _tier_note(job: Caption) -> str:
    return job.tier_note or ""


def running_text(job: Caption, step: int, total: int, note: str | None = None) -> str:
    """Running: step i of n and a percentage, or `note` (a model loading) before step 1."""
    if note is not None and step == 0:
        return _compose(job, note)
    percent = int(100 * step / total) if total else 0
    return _compose(job, f"Generating: step {step}/{total} ({percent}%)", _tier_note(job))


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
        f"--{job.tier}" if job.tier else "",
    ]
    line = " · ".join(p for p in parts if p)
    if params.negative_prompt:
        line += f"\nWithout: {shown(params.negative_prompt, _NEGATIVE_SHOWN)}"
    return line


def finished_text(
    job: Caption,
    seeds: Sequence[int],
    *,
    withheld: int = 0,
    failed: int = 0,
    warnings: Sequence[str] = (),
    note: str = "",
    fast_seconds: float = 0.0,
) -> str:
    """The grid's caption: prompt, requester, seeds and parameters (the tier among them), and
    anything withheld (`withheld`: flagged by the safety checker) or `failed` (no usable image
    came out); the fast GPU seconds charged, or why the job ran in relax."""
    lines = [parameters_line(job, seeds)]
    if fast_seconds > 0:
        lines.append(f"Fast time used: {fast_seconds:.2f} GPU seconds.")
    lines.append(_tier_note(job))
    if withheld:
        images = "image was" if withheld == 1 else "images were"
        lines.append(
            f"{withheld} {images} flagged by the safety checker and not posted; "
            "they were not counted against your quota."
        )
    if failed:
        images, were = ("image", "was") if failed == 1 else ("images", "were")
        lines.append(
            f"{failed} {images} failed: the model computed invalid numbers (shown as black), "
            f"so the {images} {were} not posted or counted against your quota."
        )
    # Engine warnings quote the member's text (the part of a long prompt that was cut).
    lines.extend(f"Note: {neutralise(warning)}" for warning in warnings)
    if note:
        lines.append(note)
    return _compose(job, *lines)


def upscale_text(job: Caption, index: int) -> str:
    """The caption of one image posted alone (U button)."""
    return _compose(job, f"Image #{index}")


def moved_text(job: Caption, where: str) -> str:
    """The old "queued" message once the result was posted elsewhere (`where`: a link)."""
    return _compose(job, f"Finished: {where}")


def failed_text(job: Caption, error: str, refunded: int) -> str:
    """A job that produced nothing; says what went wrong and that nothing was charged."""
    refund = f" The {refunded} image(s) were not counted against your quota." if refunded else ""
    return _compose(job, f"Failed: {error}.{refund}".replace("..", "."))


def cancelled_text(job: Caption) -> str:
    """A job cancelled before it started."""
    return _compose(job, "Cancelled. Nothing was counted against your quota.")


def _consecutive(seeds: Sequence[int]) -> bool:
    return all(b == a + 1 for a, b in itertools.pairwise(seeds))


def suspended_text(job: Caption) -> str:
    """The bot is shutting down while the job waits: it keeps its place for the next start."""
    return _clip(
        f"{_headline(job)}\nThe bot is restarting: this job keeps its place in the queue and "
        "starts when the bot is back (usually within a minute)."
    )


def keycap(number: int) -> str:
    """The keycap emoji of a digit (1 -> 1️⃣): /describe's suggestions and their buttons."""
    return f"{number}\N{VARIATION SELECTOR-16}\N{COMBINING ENCLOSING KEYCAP}"


#: A suggestion's echo in /describe's message (its full text is what the button imagines).
_SUGGESTION_SHOWN = 300


def describing_text(job: Caption) -> str:
    """A /describe job the captioner is working on."""
    return _compose(job, "Describing the image…")


def describe_text(
    job: Caption,
    suggestions: Sequence[str],
    *,
    error: str | None = None,
    refunded: int = 0,
    note: str = "",
) -> str:
    """/describe's answer: the numbered prompt suggestions (neutralised: they are model text)
    and what their buttons do; or, with none, why (`error`) and what was refunded."""
    if not suggestions:
        refund = " Nothing was counted against your quota." if refunded else ""
        lines = [f"No prompt suggestion to offer for this image: {error or 'none came out'}."
                 f"{refund}"]
    else:
        lines = [
            f"{keycap(i)} {shown(text, _SUGGESTION_SHOWN)}"
            for i, text in enumerate(suggestions, 1)
        ]
        lines.append("Press a number to imagine that prompt.")
    if note:
        lines.append(note)
    return _compose(job, *lines)
