"""Timing of /describe's captioner on a BLIP-base-sized RANDOM-weight model.

No weights can be downloaded here, so the captioner is `BlipForConditionalGeneration` built from
transformers' default `BlipConfig` (the shape of Salesforce/blip-image-captioning-base: a ViT-B/16
image encoder at 384 pixels, a 12-layer BERT-base text decoder, a 30,524-token vocabulary, about
247M weights) with random weights and a synthetic tokenizer of that size. Timing does not depend
on weight values (the token count does: every caption runs to `MAX_NEW_TOKENS`, since random
weights rarely end early, so this is the slowest case); the captions are noise.

    python benchmarks/describe.py --out describe.json      # on a CUDA machine
    python benchmarks/describe.py --tiny --device cpu      # smoke run: the built-in tiny BLIP

The captioner is saved, then loaded by `generation.loading.load_captioner` and run through
`Captioner.describe` exactly as a /describe job is (4 beams, then 8 seeded samples). The first
call is reported apart. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gpu_throughput import emit
from generation.loading import ModelSpec, dtype_for, load_captioner, resolve_device
from generation.tiny import TINY_MODEL_ID


def build_blip_base_random(folder: Path) -> None:
    """BLIP-base's shape (transformers' `BlipConfig` defaults) with random weights, fp16 and
    fp32, and a BERT-style tokenizer with a synthetic vocabulary of the same size."""
    import transformers
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration

    config = BlipConfig()
    size = config.text_config.vocab_size
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = [f"w{i}" for i in range(size - len(specials) - 1)]
    vocab = {token: i for i, token in enumerate([*specials, *words, "[DEC]"])}
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]")
    config.text_config.bos_token_id = tokenizer.bos_token_id
    config.text_config.sep_token_id = config.text_config.eos_token_id = tokenizer.sep_token_id
    config.text_config.pad_token_id = tokenizer.pad_token_id
    processor_cls = getattr(transformers, "BlipImageProcessorPil", transformers.BlipImageProcessor)
    image_processor = processor_cls(size={"height": 384, "width": 384})
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config)
    processor = transformers.BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    processor.save_pretrained(folder)
    model.save_pretrained(folder)
    model.to(torch.float16).save_pretrained(folder, variant="fp16")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="the built-in tiny BLIP (smoke run)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = resolve_device(args.device)
    sync = device.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "blip-base-random"
        if args.tiny:
            captioner_id = TINY_MODEL_ID
        else:
            build_blip_base_random(folder)
            captioner_id = str(folder)
        print("captioner built", file=sys.stderr, flush=True)
        spec = ModelSpec(TINY_MODEL_ID, device=args.device, cache_dir=Path(tmp) / "cache",
                         captioner_id=captioner_id)
        started = time.perf_counter()
        captioner = load_captioner(spec, device, dtype_for(device))
        load_s = time.perf_counter() - started
        from PIL import Image

        image = Image.radial_gradient("L").convert("RGB").resize((512, 512))
        started = time.perf_counter()
        captions = captioner.describe(image, seed=0)
        first = time.perf_counter() - started
        times = []
        for seed in range(1, args.repeats + 1):
            if sync:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            captioner.describe(image, seed=seed)
            if sync:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        weights = sum(p.numel() for p in captioner.model.parameters())
        results: dict[str, Any] = {
            "device": str(device),
            "dtype": str(captioner.dtype).removeprefix("torch."),
            "model": "builtin:tiny-random" if args.tiny else "BLIP-base-shaped random weights",
            "weights": weights,
            "threads": captioner.threads or torch.get_num_threads(),
            "load_s": round(load_s, 2),
            "first_describe_s": round(first, 3),
            "median_describe_s": round(statistics.median(times), 3),
            "repeats": args.repeats,
            "candidates": len(captions),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if sync else None,
        }
    emit(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
