"""Per-stage time, peak memory and host syncs of one default DragDiffusion edit on a GPU (protocol §6 costs).

Worlds: `tiny` (build_tiny, 128 px), `toy` (the toy model, 64 px) and `sd15` (SD-1.5's exact shapes, random
weights, 512 px: the cost of the real model without its weights). Precision modes: DragDiffusion's
`method.precision` values `fp32` and `official_fp16` (the official DragBench scripts' fp16 mixed
precision; methods/dragdiffusion/README.md "Precision"). Attention is diffusers' default (SDPA,
`AttnProcessor2_0`); the table names the processors actually installed. Host<->device syncs are counted
with torch's sync debug mode.
One warm-up edit (2 LoRA steps, 2 drag iterations) runs before each measured edit. A failing row (OOM, dtype
error) is printed with its error and the next row runs.

    python -m benchmarks.gpu_profile                                # all worlds x modes, paper defaults
    python -m benchmarks.gpu_profile --worlds tiny --modes fp32 --device cpu --lora-steps 2 --max-iters 2
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from collections import Counter

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from benchmarks.model_calls import ModelCalls, backbone_modules
from benchmarks.rehearse_weights import SD15_TEXT_CONFIG as PUBLISHED_SD15_TEXT_CONFIG
from benchmarks.rehearse_weights import SD15_UNET_CONFIG, SD15_VAE_CONFIG
from dragbench.backbone import (
    DDIM_CONFIG,
    Backbone,
    build_tiny,
    resolve_dtype,
)
from dragbench.sample import DragSample
from dragbench.synth import synthetic_samples
from dragbench.tokenizer_offline import build_offline_tokenizer
from methods.dragdiffusion.method import DragDiffusion

log = logging.getLogger(__name__)

# SD-1.5's published UNet/VAE; its text tower with a vocabulary the offline byte-level tokenizer's ids fit
# (CLIP's real one is 49408: benchmarks/rehearse_weights.py builds that with its own tokenizer).
SD15_TEXT_CONFIG = {**PUBLISHED_SD15_TEXT_CONFIG, "vocab_size": 1000}
MODES = ("fp32", "official_fp16")  # DragDiffusion(precision=...); weights stay float32 (it casts per stage)
WORLD_SIZES = {"tiny": 128, "toy": 64, "sd15": 512}
MB = 2**20


def build_sd15_random(device: torch.device, dtype: torch.dtype, seed: int = 0) -> Backbone:
    """SD-1.5-shaped UNet / VAE / CLIP text encoder with seeded random weights, built on `device`."""
    with torch.device(device):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
        vae = AutoencoderKL(**SD15_VAE_CONFIG)
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT_CONFIG))
    for model in (unet, vae, text_encoder):
        model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return Backbone(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=build_offline_tokenizer(),
                    scheduler=DDIMScheduler(**DDIM_CONFIG), device=device, dtype=dtype, weights="random",
                    name=f"sd15-random-seed{seed}")


def build_world(world: str, device: str, dtype: str) -> tuple[Backbone, DragSample]:
    """Backbone and one sample (square, the world's native size) for a world name."""
    size = WORLD_SIZES[world]
    if world == "tiny":
        backbone = build_tiny(seed=0, device=device, dtype=dtype)
    elif world == "toy":
        from dragbench.toy.model import load_toy_backbone

        backbone = load_toy_backbone(device=device, dtype=dtype)
    else:
        backbone = build_sd15_random(torch.device(device), resolve_dtype(dtype))
    return backbone, synthetic_samples(n=1, size=size, seed=0)[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile_row(world: str, mode: str, device: str, knobs: dict) -> dict:
    """One measured edit (after a short warm-up): stage times, wall, peak memory, UNet calls, host syncs."""
    backbone, sample = build_world(world, device, "float32")
    processors = Counter(type(p).__name__ for p in backbone.unet.attn_processors.values())
    DragDiffusion(backbone, precision=mode, **{**knobs, "lora_steps": 2, "max_iters": 2}).edit(sample)
    method = DragDiffusion(backbone, precision=mode, **knobs)
    dev = backbone.device
    _sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        torch.cuda.set_sync_debug_mode("warn")
    try:
        with ModelCalls(backbone_modules(backbone)) as calls, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            result = method.edit(sample)
            _sync(dev)
            wall = time.perf_counter() - start
    finally:
        if dev.type == "cuda":
            torch.cuda.set_sync_debug_mode(0)
    syncs = sum("synchroniz" in str(w.message).lower() for w in caught)
    peak = torch.cuda.max_memory_allocated(dev) / MB if dev.type == "cuda" else float("nan")
    stages = {k[len("time/"):]: v for k, v in result.info.items() if k.startswith("time/")}
    return {"world": world, "mode": mode, **stages, "wall": wall, "peak_mb": peak,
            "unet_calls": calls.calls["unet"], "drag_iters": result.info["iterations"],
            "host_syncs": syncs if dev.type == "cuda" else "n/a",
            "attention": "+".join(f"{k}x{v}" for k, v in processors.items())}


COLUMNS = ("world", "mode", "lora", "inversion", "drag", "denoise", "wall", "peak_mb", "unet_calls",
           "drag_iters", "host_syncs", "attention")


def _cell(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", default="tiny,toy,sd15", help="comma-separated: tiny, toy, sd15")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated: {list(MODES)}")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--lora-steps", type=int, default=None, help="default: the method's (80)")
    parser.add_argument("--max-iters", type=int, default=None, help="default: the method's (80)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    given = (("lora_steps", args.lora_steps), ("max_iters", args.max_iters))
    knobs = {k: v for k, v in given if v is not None}
    rows = []
    for world in args.worlds.split(","):
        for mode in args.modes.split(","):
            try:
                rows.append(profile_row(world, mode, args.device, knobs))
            except Exception as err:  # one failing row (OOM, dtype) must not hide the others
                failure = f"FAILED {type(err).__name__}: {err}"
                rows.append({"world": world, "mode": mode, "attention": failure})
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            print(" | ".join(_cell(rows[-1].get(c, "")) for c in COLUMNS), flush=True)
    print("\ntimes in seconds; peak_mb = torch.cuda.max_memory_allocated over the measured edit")
    print(" | ".join(COLUMNS))
    print(" | ".join("---" for _ in COLUMNS))
    for row in rows:
        print(" | ".join(_cell(row.get(c, "")) for c in COLUMNS))


if __name__ == "__main__":
    main()
