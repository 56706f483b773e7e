"""A base for test engines: the real engine, with one behaviour changed by a subclass."""

from __future__ import annotations

from generation.engine import DiffusersEngine
from generation.events import GenerationResult

__all__ = ["PassThroughEngine"]


class PassThroughEngine:
    """Hands every call to the wrapped engine; a subclass overrides what it changes."""

    def __init__(self, inner: DiffusersEngine) -> None:
        self.inner = inner

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    def load(self) -> None:
        self.inner.load()

    def supports(self, operation):  # type: ignore[no-untyped-def]
        return self.inner.supports(operation)

    def close(self) -> None:
        self.inner.close()

    def warmup(self, width: int, height: int) -> GenerationResult:
        return self.inner.warmup(width, height)

    def generate(self, requests, on_step=None, should_stop=None):  # type: ignore[no-untyped-def]
        return self.inner.generate(requests, on_step, should_stop)
