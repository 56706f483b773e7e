"""How long a full garbage collection holds the interpreter once a model is loaded, before and
after `gc.freeze()` (what `GenerationService.start` now does after warm-up).

Every thread waits while the collector runs, the Discord event loop included, so this is the
event-loop stall per full collection. `imagine bench` (with and without `--no-gc-freeze`)
measures the loop lag itself while generating.

    python benchmarks/gc_pause.py --model builtin:sd15-small-random
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generation.engine import DiffusersEngine
from generation.loading import ModelSpec


def full_collections(repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        gc.collect()
        times.append(1000 * (time.perf_counter() - started))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:sd15-small-random")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=64, help="warm-up image side")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    engine = DiffusersEngine(ModelSpec(args.model, device=args.device))
    engine.load()
    engine.warmup(args.size, args.size)
    tracked = len(gc.get_objects())
    before = full_collections(args.repeats)
    gc.freeze()
    after = full_collections(args.repeats)
    report = {
        "model": args.model,
        "tracked_objects": tracked,
        "frozen_objects": gc.get_freeze_count(),
        "full_gc_ms_before_freeze": {"median": statistics.median(before), "max": max(before)},
        "full_gc_ms_after_freeze": {"median": statistics.median(after), "max": max(after)},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
