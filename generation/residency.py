"""Which optional models stay on the GPU: loaded on first use, least recently used moved off.

The main pipeline is always resident. The optional models of the creative tools (the
inpainting UNet of Zoom Out and Pan, the latent upscaler, any later one) are loaded on their
first use, and a memory budget (`ModelSpec.memory_budget_gb`, None: unlimited) decides which of
them stay on the device: before one is placed there, the least recently used others are moved
to the CPU until the main pipeline plus the resident models fit; a model moved off is moved back
on its next use (seconds over PCIe, not a reload from disk). A model larger than what is left
even with every other one moved off is placed anyway, with a warning: the main pipeline is never
moved, and the tool should still work.

Sizes are measured, not guessed: the bytes of a model's own parameters and buffers
(``numel * element_size``), counting a tensor shared by two modules once. Only a model's own
modules move: components it shares with the main pipeline (`from_pipe`) stay where they are.

Not thread-safe: the engine uses it from its one worker thread.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["GIB", "Loaded", "Residency", "module_bytes"]

log = logging.getLogger(__name__)

GIB = 1024**3


def module_bytes(modules: Iterable[torch.nn.Module]) -> int:
    """Bytes of the parameters and buffers of `modules` (each tensor once)."""
    seen: set[int] = set()
    total = 0
    for module in modules:
        for tensor in itertools.chain(module.parameters(), module.buffers()):
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


@dataclass(frozen=True)
class Loaded:
    """What a loader returns: the model (`value`, e.g. a pipeline) and the modules that are its
    own (moved on and off the device; shared components are not listed)."""

    value: Any
    modules: Sequence[torch.nn.Module]


@dataclass
class _Entry:
    name: str
    loaded: Loaded
    size: int
    on_device: bool = False
    last_used: int = 0
    moves: int = field(default=0)


class Residency:
    """The optional models of one engine, by name, under a device memory budget.

    `device`: where models run; `offload`: where a model moved off goes (the CPU);
    `budget_bytes`: main pipeline plus resident optional models, None for no limit;
    `base_bytes`: the main pipeline's size (never moved).
    """

    def __init__(
        self,
        device: torch.device,
        budget_bytes: int | None,
        base_bytes: int,
        offload: torch.device | None = None,
    ) -> None:
        self.device = device
        self.offload = offload or torch.device("cpu")
        self.budget_bytes = budget_bytes
        self.base_bytes = base_bytes
        self._entries: dict[str, _Entry] = {}
        self._clock = itertools.count(1)

    def loaded(self, name: str) -> bool:
        """Whether `name` was loaded (on the device or moved off)."""
        return name in self._entries

    def on_device(self) -> list[str]:
        """The optional models on the device now, least recently used first."""
        entries = sorted(self._entries.values(), key=lambda e: e.last_used)
        return [e.name for e in entries if e.on_device]

    def size(self, name: str) -> int:
        """Measured bytes of loaded model `name` (KeyError when not loaded)."""
        return self._entries[name].size

    def resident_bytes(self) -> int:
        """The main pipeline plus the optional models on the device, in bytes."""
        return self.base_bytes + sum(e.size for e in self._entries.values() if e.on_device)

    def use(self, name: str, load: Callable[[], Loaded]) -> Any:
        """Model `name` on the device, loading it with `load` (which may leave its own modules
        on the CPU) on first use; moves least recently used others off to make room."""
        entry = self._entries.get(name)
        if entry is None:
            started = time.perf_counter()
            log.info("loading optional model %s on first use", name)
            loaded = load()
            entry = _Entry(name, loaded, module_bytes(loaded.modules))
            self._entries[name] = entry
            log.info(
                "loaded optional model %s (%.2f GiB) in %.1f s",
                name,
                entry.size / GIB,
                time.perf_counter() - started,
            )
        if not entry.on_device:
            self._make_room(entry)
            self._move(entry, self.device)
            entry.on_device = True
        entry.last_used = next(self._clock)
        return entry.loaded.value

    def clear(self) -> None:
        """Forget every optional model (the engine is closing)."""
        self._entries.clear()

    def _make_room(self, entry: _Entry) -> None:
        if self.budget_bytes is None:
            return
        for other in sorted(self._entries.values(), key=lambda e: e.last_used):
            if self.resident_bytes() + entry.size <= self.budget_bytes:
                return
            if other is entry or not other.on_device:
                continue
            log.info(
                "moving optional model %s (%.2f GiB) off %s to fit %s in the %.2f GiB budget",
                other.name,
                other.size / GIB,
                self.device,
                entry.name,
                self.budget_bytes / GIB,
            )
            self._move(other, self.offload)
            other.on_device = False
        if self.resident_bytes() + entry.size > self.budget_bytes:
            log.warning(
                "optional model %s (%.2f GiB) does not fit the %.2f GiB memory budget next to "
                "the main model (%.2f GiB); placing it anyway",
                entry.name,
                entry.size / GIB,
                self.budget_bytes / GIB,
                self.base_bytes / GIB,
            )

    def _move(self, entry: _Entry, device: torch.device) -> None:
        for module in entry.loaded.modules:
            module.to(device)
        entry.moves += 1
        if device.type != "cuda" and self.device.type == "cuda":
            torch.cuda.empty_cache()  # hand the freed blocks back for the next model
