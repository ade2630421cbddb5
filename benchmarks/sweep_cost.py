"""Cost of the offline Fig. 7 sweep (protocol §4) with and without reuse through the cache (DESIGN.md "Reuse").

Runs the 14 points of `experiment=fig7` (composed with Hydra's compose API, run by `experiments.job.run_job`
on built objects) twice in one process: reuse disabled (`cache.enabled=false`) and enabled (a fresh temporary
cache, with the LoRA planner: every sample's LoRA trained once to the largest step count of the sweep, with
snapshots at the others). Prints wall time and model calls of both and whether every edited image and every
metric is identical.

Model calls = forward-equivalents of the UNet, VAE encoder/decoder and text encoder of the method's and the
metric's backbones (`benchmarks.model_calls`): a forward on a batch of B counts B, a backward through it 2 B.

    OMP_NUM_THREADS=1 python -m benchmarks.sweep_cost --samples 1                 # ~6 min, 2 CPU cores
    OMP_NUM_THREADS=1 python -m benchmarks.sweep_cost --samples 1 --max-iters 80  # paper drag budget ~9 min

Measured (2026-11-25, CPU): max_iters 20 -> reuse_ratio 0.330, call_ratio 0.258; max_iters 80 -> call_ratio
0.345 (the drag loop and the final denoising cannot be shared between points: their share bounds the ratio).
The last line is `reuse_ratio=<wall ratio> call_ratio=<model-call ratio> identical=<true|false>`.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import numpy as np
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from PIL import Image

from benchmarks.model_calls import ModelCalls, backbone_modules
from dragbench.cache import Cache
from dragbench.diffusion.lora import LORA_STATS, lora_snapshots
from experiments import CONF_DIR
from experiments.job import run_job
from experiments.results_store import ResultsStore

log = logging.getLogger(__name__)

METRICS = ("mean_distance", "image_fidelity")


def compose_config(overrides: list[str]) -> DictConfig:
    """The app's config for `overrides` (compose API, Hydra's own node included)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()
    return cfg


def instantiate(node: DictConfig):
    """hydra.utils.instantiate with plain-python containers (as experiments.run does)."""
    return hydra.utils.instantiate(node, _convert_="all")


def fig7_points() -> list[str]:
    """The `ablation` values swept by conf/experiment/fig7.yaml, in sweep order."""
    cfg = compose_config(["experiment=fig7"])
    return [p.strip() for p in str(cfg.hydra.sweeper.params.ablation).split(",") if p.strip()]


@dataclass
class ModeRun:
    """Outcome of one pass over the sweep."""

    wall: float = 0.0
    cpu: float = 0.0  # this process's CPU time: robust to other load on a shared box (OMP_NUM_THREADS=1)
    calls: ModelCalls | None = None
    images: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    metrics: dict[tuple[str, str], tuple[float, ...]] = field(default_factory=dict)
    lora_steps: int = 0
    cache_stats: Counter = field(default_factory=Counter)


def plan_lora(method_cfgs: list[DictConfig], methods: list, samples: list, cache: Cache) -> int:
    """Sweep-level LoRA planner: per sample and LoRA setting, train once to the largest step count.

    Every step count the sweep asks for is stored as a snapshot (same cache keys as the method's own
    `lora_snapshots` call), so each job then finds its LoRA in the cache whatever order or launcher runs it.

    Returns:
        Number of distinct LoRA trainings planned.
    """
    groups: dict[tuple, set[int]] = {}
    for cfg, method in zip(method_cfgs, methods, strict=True):
        if cfg.lora_steps > 0:
            key = (id(method.backbone), cfg.lora_rank, cfg.lora_lr, cfg.lora_batch_size, cfg.seed)
            groups.setdefault(key, set()).add(int(cfg.lora_steps))
    backbones = {id(m.backbone): m.backbone for m in methods}
    for (bb_id, rank, lr, batch, seed), steps in groups.items():
        for sample in samples:
            lora_snapshots(backbones[bb_id], sample.image, sample.prompt, sorted(steps), rank=rank,
                           alpha=rank, lr=lr, batch_size=batch, seed=seed, cache=cache)
    return len(groups) * len(samples)


def run_sweep(points: list[str], base: list[str], cache_root: Path, enabled: bool, out: Path) -> ModeRun:
    """Build and run every sweep point; count model calls and time the whole pass."""
    overrides = [*base, f"cache.root={cache_root}", f"cache.enabled={str(enabled).lower()}"]
    cfgs = [compose_config([*overrides, f"ablation={p}"]) for p in points]
    samples = instantiate(cfgs[0].dataset)
    methods = [instantiate(c.method) for c in cfgs]  # backbones are memoised: loaded once per process
    evaluators = [instantiate(c.eval) for c in cfgs]
    modules = {**backbone_modules(methods[0].backbone), **backbone_modules(evaluators[0].featurizer.backbone,
                                                                            "eval/")}
    unique: dict[str, object] = {}
    for name, module in modules.items():  # method and metric may share one memoised backbone
        if all(module is not m for m in unique.values()):
            unique[name] = module
    run = ModeRun()
    steps_before = LORA_STATS["optimizer_steps"]
    start, cpu_start = time.perf_counter(), time.process_time()
    with ModelCalls(unique) as calls:
        if enabled:
            plan_lora([c.method for c in cfgs], methods, samples, Cache(cache_root))
        for point, cfg, method, evaluator in zip(points, cfgs, methods, evaluators, strict=True):
            store = ResultsStore(out / point)
            run_job(samples, method, evaluator, store, seed=cfg.seed, n_boot=cfg.aggregate.n_boot,
                    boot_seed=cfg.aggregate.seed, progress=False)
            rows = store.results().set_index("sample_id")
            for sample in samples:
                key = (point, sample.sample_id)
                run.metrics[key] = tuple(float(rows.loc[sample.sample_id, m]) for m in METRICS)
                path = store.edited_image_path(sample.sample_id)
                run.images[key] = np.asarray(Image.open(path)) if path.exists() else np.zeros(0)
    run.wall = time.perf_counter() - start
    run.cpu = time.process_time() - cpu_start
    run.calls = calls
    run.lora_steps = LORA_STATS["optimizer_steps"] - steps_before
    for obj in (*methods, *evaluators):
        run.cache_stats.update(getattr(getattr(obj, "cache", None), "stats", Counter()))
    return run


def identical(a: ModeRun, b: ModeRun) -> bool:
    """Every edited image and metric equal (bit-exact; NaN == NaN)."""
    if a.images.keys() != b.images.keys():
        return False
    same_images = all(np.array_equal(a.images[k], b.images[k]) for k in a.images)
    same_metrics = all(np.array_equal(a.metrics[k], b.metrics[k], equal_nan=True) for k in a.metrics)
    return same_images and same_metrics


def _report(name: str, run: ModeRun) -> None:
    assert run.calls is not None
    print(f"[{name}] wall {run.wall:.1f} s (CPU {run.cpu:.1f} s), model calls {run.calls.cost()} "
          f"forward-equivalents, {run.lora_steps} LoRA optimiser steps, "
          f"cache {dict(sorted(run.cache_stats.items()))}")
    for module, s in run.calls.summary().items():
        print(f"  {module:18s} calls {s['calls']:6d}  samples {s['samples']:6d}  backward "
              f"{s['backward_calls']:5d} (samples {s['backward_samples']:5d})  cost {s['cost']:7d}  "
              f"time {s['forward_s'] + s['backward_s']:8.1f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=1, help="toy samples (dataset.n)")
    parser.add_argument("--dataset", default="toy", help="dataset option (toy: 64x64 scenes)")
    parser.add_argument("--model", default="toy", help="model option (toy | tiny)")
    parser.add_argument("--max-iters", type=int, default=20,
                        help="drag-loop iterations at most (paper: 80; the same in both passes)")
    parser.add_argument("--points", default="all", help="comma-separated ablation points (default: fig7)")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    points = fig7_points() if args.points == "all" else args.points.split(",")
    base = ["preset=offline", f"model={args.model}", f"dataset={args.dataset}", f"dataset.n={args.samples}",
            "logger=none", "device=cpu", "++eval.cache=${cache}", "aggregate.n_boot=10",
            f"method.max_iters={args.max_iters}", *args.override]
    print(f"fig7 sweep: {len(points)} points x {args.samples} sample(s), model={args.model}, "
          f"max_iters={args.max_iters}")
    with tempfile.TemporaryDirectory(prefix="sweep_cost-") as tmp:
        tmp = Path(tmp)
        # reuse first: it pays any first-call warm-up, so the ratio is conservative
        reuse = run_sweep(points, base, tmp / "cache", True, tmp / "reuse")
        _report("reuse", reuse)
        plain = run_sweep(points, base, tmp / "unused-cache", False, tmp / "no_reuse")
        _report("no reuse", plain)
    assert reuse.calls is not None and plain.calls is not None
    print(f"model calls: reuse {reuse.calls.cost()} / no reuse {plain.calls.cost()}; "
          f"UNet forward calls {reuse.calls.calls['unet']} / {plain.calls.calls['unet']}")
    same = identical(reuse, plain)
    call_ratio = reuse.calls.cost() / plain.calls.cost()
    print(f"CPU-time ratio {reuse.cpu / plain.cpu:.3f} (wall is noisy when other jobs share the cores)")
    wall_ratio = reuse.wall / plain.wall
    print(f"reuse_ratio={wall_ratio:.3f} call_ratio={call_ratio:.3f} identical={str(same).lower()}")


if __name__ == "__main__":
    main()
