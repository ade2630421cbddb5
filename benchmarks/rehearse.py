"""The real path, rehearsed: full-size random weights in the published layouts, the README's own commands.

1. builds seeded random weights in the exact published configurations and on-disk layouts
   (benchmarks/rehearse_weights.py: SD-1.5 and SD-2.1 pipeline folders, torchvision's AlexNet file,
   NVIDIA-style StyleGAN2 512-px pickles), once per --out folder;
2. runs the README's real-weights commands as subprocesses on full-size real DragBench samples:
   DragDiffusion (`model.pretrained=`, `eval.pretrained=`, `TORCH_HOME=`), DragGAN (`DRAGGAN_CKPT_DIR=`),
   and DragGAN again with an empty checkpoint folder; `--methods` adds GoodDrag, DragNoise, FastDrag and
   SDE-Drag on the same SD-1.5 folder (or picks any subset);
3. checks: every sample `ok`, finite MD and IF, the official evaluator used (weights label `real`), and the
   job without DragGAN checkpoints stopping before its first sample with one line;
4. prints a table per stage: seconds, peak memory and precision mode (from results.csv) beside the anchors
   of the official DragDiffusion code on an A100.

    python -m benchmarks.rehearse --quick --data /path/to/DragBench      # 2 CPU cores: minutes
    python -m benchmarks.rehearse --data /path/to/DragBench               # GPU: paper defaults, all samples
    python -m benchmarks.rehearse --data DIR --methods dragdiffusion,gooddrag,dragnoise,fastdrag,sdedrag,draggan

`--quick` reduces steps through the documented knobs only (QUICK_KNOBS) and runs one sample per method.
Exit status 1 when a check fails; 0 with one "SKIPPED" line when there are no real samples.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.rehearse_report import (
    JobCheck,
    check_job,
    check_missing_checkpoints,
    stage_table,
)
from benchmarks.rehearse_weights import RehearsalWeights, build_all

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
# Fewer LoRA / DDIM / drag / inversion steps through the methods' own knobs (README "Knobs").
QUICK_KNOBS = {
    "dragdiffusion": (
        "method.lora_steps=2",
        "method.lora_batch_size=1",
        "method.n_inference_steps=4",
        "method.inversion_step=3",
        "method.max_iters=2",
    ),
    "draggan": (
        "method.inversion_steps=2",
        "method.pti_steps=1",
        "method.max_iters=2",
    ),
    "gooddrag": (
        "method.lora_steps=2",
        "method.lora_batch_size=1",
        "method.n_inference_steps=4",  # inversion_strength 0.75 -> 3 inverted steps
        "method.drag_end_step=1",
        "method.track_per_step=2",
        "method.drag_per_track=1",
    ),
    "dragnoise": (
        "method.lora_steps=2",
        "method.lora_batch_size=1",
        "method.n_inference_steps=4",
        "method.inversion_step=3",
        "method.max_iters=2",
    ),
    "fastdrag": ("method.n_inference_steps=4", "method.inversion_step=3"),
    "sdedrag": ("method.lora_steps=2", "method.steps=10", "method.step_size=1000"),  # one chunk, 6 SDE steps
}
# Every method the rehearsal can run; the default is the paper's two (DragDiffusion and its DragGAN baseline).
# The SD-1.5 methods run on the rehearsal's SD-1.5 folder (a local backbone: GoodDrag's VAE and FastDrag's
# UNet resolve to the folder's own under `auto`); `--precision` modes apply to those with `method.precision`.
METHODS = ("dragdiffusion", "gooddrag", "dragnoise", "fastdrag", "sdedrag", "draggan")
DEFAULT_METHODS = ("dragdiffusion", "draggan")
PRECISION_METHODS = ("dragdiffusion", "dragnoise")
# The categories conf/method/draggan.yaml's category_routes send to a StyleGAN2: the rehearsal builds those two
# pickles only, so its DragGAN jobs use `method.routing=category` (the CLIP ensemble needs all ten + CLIP-L).
DRAGGAN_CATEGORIES = "[human_head,animals]"


@dataclass
class Job:
    """One `python -m experiments.run` call of the rehearsal."""

    name: str
    overrides: list[str]
    env: dict[str, str] = field(default_factory=dict)
    expect_ok: bool = True  # False: the job must stop before its first sample


def default_data_root() -> Path:
    """The harness's own default DragBench root: `$DRAGBENCH_DATA/dragbench` (conf/paths/default.yaml)."""
    return Path(os.environ.get("DRAGBENCH_DATA", REPO_ROOT / "data")) / "dragbench"


def check_methods(methods: tuple[str, ...]) -> None:
    """Raise ValueError naming the methods the rehearsal does not know (before any weights are built)."""
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown rehearsal methods {unknown}; choose from {', '.join(METHODS)}")


def plan_jobs(
    weights: RehearsalWeights,
    data: Path,
    runs: Path,
    quick: bool,
    precisions: list[str] | None = None,
    methods: tuple[str, ...] = DEFAULT_METHODS,
) -> list[Job]:
    """The README's real-weights commands (section "Real weights and data") for this rehearsal.

    One job per SD-1.5 method in `methods` and, for DragDiffusion and DragNoise, per precision mode
    (`method.precision`; none given: the method's default), each with its own cache dir so no job reuses
    another's LoRA or latents; then DragGAN, with and without its checkpoints.
    """
    check_methods(methods)
    common = [
        f"dataset.root={data}",
        f"eval.pretrained={weights.sd21}",
        "eval.local_files_only=true",
        "logger=none",
        # the harness cannot tell these files from the real ones (its rows say weights=real): say so in config
        "tags=[rehearsal,random_weights_in_published_layout]",
    ]
    env = {"TORCH_HOME": str(weights.torch_home)}  # + DRAGBENCH_CACHE_DIR per job, + DRAGGAN_CKPT_DIR
    limit = ["dataset.limit=1"] if quick else []
    modes: list[str | None] = list(precisions) if precisions else [None]
    diffusion_jobs = []
    for method in (m for m in METHODS if m in methods and m != "draggan"):
        overrides = [
            f"method={method}",
            f"model.pretrained={weights.sd15}",
            "model.local_files_only=true",
            *(QUICK_KNOBS[method] if quick else ()),
        ]
        for mode in modes if method in PRECISION_METHODS else [None]:
            name = f"{method}_{mode}" if mode and len(modes) > 1 else method
            precision = [f"method.precision={mode}"] if mode else []
            diffusion_jobs.append(
                Job(
                    name,
                    [*overrides, *precision, *common, *limit],
                    {**env, "DRAGBENCH_CACHE_DIR": str(runs / "cache" / name)},
                )
            )
    if "draggan" not in methods:
        return diffusion_jobs
    drag_gan = [
        "method=draggan",
        "method.routing=category",
        f"dataset.categories={DRAGGAN_CATEGORIES}",
        *(QUICK_KNOBS["draggan"] if quick else ()),
    ]
    empty = runs / "no-checkpoints"
    empty.mkdir(parents=True, exist_ok=True)
    gan_env = {
        **env,
        "DRAGBENCH_CACHE_DIR": str(runs / "cache" / "draggan"),
        "DRAGGAN_CKPT_DIR": str(weights.draggan_dir),
    }
    return [
        *diffusion_jobs,
        Job("draggan", [*drag_gan, *common, *limit], gan_env),
        Job(
            "draggan_no_checkpoints",
            [*drag_gan, *common, *limit],
            {**gan_env, "DRAGGAN_CKPT_DIR": str(empty)},
            expect_ok=False,
        ),
    ]


def run_job(job: Job, runs: Path) -> tuple[Path, subprocess.CompletedProcess, float]:
    """Run one job as a subprocess in its own job dir; returns (job dir, process, wall seconds)."""
    job_dir = runs / job.name
    argv = [sys.executable, "-m", "experiments.run", *job.overrides, f"hydra.run.dir={job_dir}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **job.env}
    shown = " ".join(f"{k}={v}" for k, v in job.env.items())
    print(f"\n$ {shown} python -m experiments.run {' '.join(job.overrides)}", flush=True)
    out_path, err_path = runs / f"{job.name}.stdout.txt", runs / f"{job.name}.stderr.txt"
    start = time.perf_counter()
    with out_path.open("w") as out, err_path.open("w") as err:  # streamed: follow a long job with tail -f
        returncode = subprocess.run(argv, cwd=REPO_ROOT, env=env, stdout=out, stderr=err).returncode
    wall = time.perf_counter() - start
    proc = subprocess.CompletedProcess(argv, returncode, out_path.read_text(), err_path.read_text())
    print(f"  exit {returncode} after {wall:.0f} s (output: {out_path}, .stderr.txt)", flush=True)
    return job_dir, proc, wall


def rehearse(
    data: Path,
    out: Path,
    quick: bool,
    precisions: list[str] | None,
    seed: int,
    methods: tuple[str, ...] = DEFAULT_METHODS,
) -> list[JobCheck]:
    """Build the weights, run every job and check it. Returns one JobCheck per job."""
    start = time.perf_counter()
    weights = build_all(out / "weights", seed=seed)
    print(f"weights ready in {out / 'weights'} ({time.perf_counter() - start:.0f} s)", flush=True)
    runs = out / "runs" / time.strftime("%Y-%m-%d_%H-%M-%S")
    runs.mkdir(parents=True, exist_ok=True)
    checks = []
    for job in plan_jobs(weights, data, runs, quick, precisions, methods):
        job_dir, proc, wall = run_job(job, runs)
        if job.expect_ok:
            checks.append(check_job(job.name, job_dir, proc.returncode, wall))
        else:
            checks.append(check_missing_checkpoints(job.name, job_dir, proc, wall))
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few steps via the knobs, one sample per method")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "logs" / "rehearse",
        help="weights (built once) and job dirs go here (default: logs/rehearse)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="DragBench root in the official layout (default: $DRAGBENCH_DATA/dragbench)",
    )
    parser.add_argument(
        "--precision",
        default=None,
        help="method.precision of DragDiffusion, comma-separated for one job each (auto | official_fp16 | "
        "fp32; default: the method's own, auto)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated, from {','.join(METHODS)} (default: {','.join(DEFAULT_METHODS)})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = args.data or default_data_root()
    if not any(data.glob("*/*/meta_data.pkl")):
        print(f"SKIPPED: no DragBench samples under {data} (pass --data DIR)")
        return 0
    precisions = args.precision.split(",") if args.precision else None
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    try:
        check_methods(methods)
    except ValueError as err:
        parser.error(str(err))
    checks = rehearse(data, args.out, args.quick, precisions, args.seed, methods)
    print("\n" + stage_table(checks, quick=args.quick))
    failed = [c for c in checks if not c.passed]
    for check in checks:
        print(f"{'PASS' if check.passed else 'FAIL'} {check.name}: {check.summary}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
