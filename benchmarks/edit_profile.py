"""Where the time of one default DragDiffusion edit goes (protocol §2 defaults, tiny model, CPU).

Runs one edit with the method's defaults (LoRA 80 steps, inversion 35/50, drag <= 80 iterations, denoise)
under `benchmarks.model_calls.ModelCalls` and prints the share of wall time spent outside the UNet / VAE /
text-encoder calls (forward and backward). `--profile FILE` also writes a cProfile of the edit.

    OMP_NUM_THREADS=1 python -m benchmarks.edit_profile            # tiny model, synthetic 64x64 sample
    OMP_NUM_THREADS=1 python -m benchmarks.edit_profile --model toy
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import time

from benchmarks.model_calls import ModelCalls, backbone_modules
from dragbench.backbone import Backbone, build_tiny
from dragbench.sample import DragSample
from methods.dragdiffusion.method import DragDiffusion

log = logging.getLogger(__name__)


def load(model: str, size: int) -> tuple[Backbone, DragSample]:
    """The backbone and one sample of the chosen world (tiny: synthetic sample; toy: toy scene)."""
    if model == "toy":
        from dragbench.toy.model import load_toy_backbone
        from dragbench.toy.samples import toy_samples

        return load_toy_backbone(device="cpu"), toy_samples(n=1, size=size, seed=0)[0]
    if model == "tiny":
        from dragbench.synth import synthetic_samples

        return build_tiny(seed=0, device="cpu"), synthetic_samples(n=1, size=size, seed=0)[0]
    raise ValueError(f"--model must be tiny or toy, got {model!r}")


def profile_edit(method: DragDiffusion, sample: DragSample, profile_path: str | None = None) -> dict:
    """Run one edit; returns wall time, time inside model calls, the calls and the method's stage times."""
    profiler = cProfile.Profile() if profile_path else None
    with ModelCalls(backbone_modules(method.backbone)) as calls:
        start = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        result = method.edit(sample)
        if profiler is not None:
            profiler.disable()
        wall = time.perf_counter() - start
    if profiler is not None:
        profiler.dump_stats(profile_path)
    stages = {k[len("time/"):]: v for k, v in result.info.items() if k.startswith("time/")}
    return {"wall": wall, "inside": calls.seconds(), "calls": calls, "stages": stages,
            "iterations": result.info.get("iterations")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", choices=("tiny", "toy"))
    parser.add_argument("--size", type=int, default=64, help="sample side in pixels")
    parser.add_argument("--profile", default=None, help="write a cProfile of the edit to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    backbone, sample = load(args.model, args.size)
    out = profile_edit(DragDiffusion(backbone), sample, args.profile)
    print(f"one default edit, model={args.model}, {sample.height}x{sample.width}, "
          f"{out['iterations']} drag iterations: wall {out['wall']:.2f} s")
    print("stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in out["stages"].items()))
    for name, s in out["calls"].summary().items():
        print(f"  {name:13s} calls {s['calls']:5d}  samples {s['samples']:5d}  "
              f"backward {s['backward_calls']:4d}  forward {s['forward_s']:7.2f} s  "
              f"backward {s['backward_s']:7.2f} s")
    if args.profile:
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(15)
    print(f"inside model calls {out['inside']:.2f} s of {out['wall']:.2f} s")
    print(f"overhead_share={1 - out['inside'] / out['wall']:.4f}")


if __name__ == "__main__":
    main()
