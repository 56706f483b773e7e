"""/describe: prompt suggestions for an image, from a BLIP image-captioning model.

`Captioner` wraps a loaded `BlipForConditionalGeneration` and its `BlipProcessor` (see
`generation.loading.load_captioner`); it runs on the worker thread like every model.

How the suggestions are drawn, and why: BLIP's best caption comes from beam search, but its
other beams differ by a word or an article ("a dog in the leaves", "a dog in leaves"), which
makes poor alternatives. So the first suggestion is the best beam (the most faithful
description), and the others are nucleus samples (top-p 0.9), which vary the wording and the
details the way Midjourney's four suggestions do. The samples are drawn from the request's
seed, so the same image and seed give the same suggestions (after a restart too); the remaining
beams fill in when sampling repeats itself. Candidates are cleaned (whitespace, length) and
deduplicated ignoring case and punctuation; up to `CANDIDATES` come back best first, so that
the caller can drop any its moderation refuses and still show four.

With ``builtin:tiny-random`` the captioner has random weights: its captions are noise (random
words from a tiny vocabulary); they exercise the whole path, not the model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from generation.text import cut_text

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

__all__ = ["CANDIDATES", "MAX_SUGGESTION_CHARS", "Captioner", "clean_caption"]

#: Distinct candidates returned, best first: twice the four /describe shows, so that some may
#: be dropped by moderation.
CANDIDATES = 8
#: A suggestion's longest text, in code points (it becomes an /imagine prompt and a line of a
#: message: well within both limits).
MAX_SUGGESTION_CHARS = 200
#: Tokens a caption may have; BLIP's captions are about 10 words (a dozen tokens).
MAX_NEW_TOKENS = 20
#: At least this many tokens: without it a random-weight model may end at once (empty text).
MIN_NEW_TOKENS = 3
BEAMS = 4
TOP_P = 0.9

_SPACES = re.compile(r"\s+")
_NOT_WORD = re.compile(r"[\W_]+")


def clean_caption(text: str) -> str:
    """One line, single spaces, at most `MAX_SUGGESTION_CHARS` (cut between whole
    characters)."""
    return cut_text(_SPACES.sub(" ", text).strip(), MAX_SUGGESTION_CHARS)


def _key(text: str) -> str:
    """What makes two captions the same suggestion: their words, ignoring case and
    punctuation."""
    return " ".join(_NOT_WORD.sub(" ", text.casefold()).split())


@dataclass
class Captioner:
    """A loaded BLIP captioner on `device` in `dtype`. Worker thread only."""

    model_id: str
    model: Any
    processor: Any
    device: torch.device
    dtype: torch.dtype
    #: Intra-op threads while captioning (None: torch's setting). The tiny test captioner on
    #: a CPU runs on one: its 32-wide matrices gain nothing from threads, and a shared or
    #: loaded CPU made thread hand-offs cost 15-30x the arithmetic (measured 0.4 s on one
    #: thread against 7-15 s on two, on a 2-core machine under load).
    threads: int | None = None

    @property
    def is_test_model(self) -> bool:
        """The built-in tiny captioner (random weights: its captions are noise)."""
        from generation.tiny import TINY_MODEL_ID

        return self.model_id == TINY_MODEL_ID

    def describe(self, image: Image, seed: int, count: int = CANDIDATES) -> list[str]:
        """Up to `count` distinct captions of `image`, best first (see the module doc):
        deterministic for the same image and `seed`. May be fewer when the model keeps
        repeating itself (never empty strings)."""
        import torch  # not at import: the bot's Discord-free core reads this module's numbers

        if self.threads is None:
            return self._describe(image, seed, count)
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)  # process-wide: only the worker thread runs torch
        try:
            return self._describe(image, seed, count)
        finally:
            torch.set_num_threads(previous)

    def _describe(self, image: Image, seed: int, count: int) -> list[str]:
        import torch

        pixels = self.processor(images=image.convert("RGB"), return_tensors="pt").pixel_values
        pixels = pixels.to(device=self.device, dtype=self.dtype)
        common = {"max_new_tokens": MAX_NEW_TOKENS, "min_new_tokens": MIN_NEW_TOKENS}
        with torch.inference_mode():
            beams = self.model.generate(
                pixel_values=pixels, num_beams=BEAMS, num_return_sequences=BEAMS, **common
            )
            devices = [self.device.index or 0] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                samples = self.model.generate(
                    pixel_values=pixels,
                    do_sample=True,
                    top_p=TOP_P,
                    top_k=0,
                    num_return_sequences=count,
                    **common,
                )
        decode = self.processor.batch_decode
        beam_texts = decode(beams, skip_special_tokens=True)
        sample_texts = decode(samples, skip_special_tokens=True)
        ordered = [*beam_texts[:1], *sample_texts, *beam_texts[1:]]
        captions: list[str] = []
        seen: set[str] = set()
        for text in ordered:
            caption = clean_caption(text)
            key = _key(caption)
            if key and key not in seen:
                seen.add(key)
                captions.append(caption)
        return captions[:count]
