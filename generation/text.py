"""Cutting member text for display without breaking characters.

Python strings never split a code point, but a cut can still fall between the parts of one
visible character: a letter and its combining accent, the halves of a flag, the members of an
emoji joined by ZWJ. `cut_text` cuts on grapheme-cluster boundaries (Unicode UAX #29, through
the `regex` module's ``\\X``), so a shortened prompt never shows a broken character or "�".
"""

from __future__ import annotations

import regex

__all__ = ["ELLIPSIS", "cut_text", "graphemes"]

ELLIPSIS = "…"
_GRAPHEME = regex.compile(r"\X")


def graphemes(text: str) -> list[str]:
    """The user-perceived characters of `text`, in order (each one or more code points)."""
    return _GRAPHEME.findall(text)


def cut_text(text: str, limit: int, ellipsis: str = ELLIPSIS) -> str:
    """`text` if it has at most `limit` code points, else its longest prefix of whole
    graphemes that fits in `limit` code points together with `ellipsis`.

    Raises ValueError for a negative limit; returns "" when not even the ellipsis fits.
    """
    if limit < 0:
        raise ValueError(f"limit must be 0 or more, got {limit}")
    if len(text) <= limit:
        return text
    room = limit - len(ellipsis)
    if room < 0:
        return ""
    kept: list[str] = []
    used = 0
    for cluster in graphemes(text):
        if used + len(cluster) > room:
            break
        kept.append(cluster)
        used += len(cluster)
    return "".join(kept).rstrip() + ellipsis
