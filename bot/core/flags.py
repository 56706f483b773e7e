"""Midjourney-style parameters typed at the end of a prompt, for the `/imagine` cog.

The parser is `generation.flags`, shared with the command line (`imagine generate`) so a prompt
reads the same everywhere; this module is the bot's name for it (same names, re-exported). The
cog parses the prompt with `parse_prompt`, then merges the result with the slash options by
`merge_options` (an explicit slash option wins over the same parameter typed as a flag).
"""

from __future__ import annotations

from generation.flags import *  # noqa: F403 - the one parser, re-exported whole
from generation.flags import __all__ as __all__
