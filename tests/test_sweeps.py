"""Sweeps through the real CLI (-m): Fig. 7 offline, the end-of-sweep summary and figure, launchers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from harness_fakes import expected_md, knob_shift

KNOBS = ("inversion_step", "lora_steps", "unet_block")
FAST = ("method=knob_echo", "eval=fast", "hydra/job_logging=none")  # knob_echo / fast: tests/conf


def _check_sweep(sweep: Path, n_jobs: int, samples) -> pd.DataFrame:
    summary = pd.read_csv(sweep / "summary.csv")
    assert len(summary) == n_jobs and sorted(summary["job"]) == list(range(n_jobs))
    assert all((sweep / str(j) / "metrics.json").exists() for j in range(n_jobs))
    for row in summary.itertuples():  # knob_echo rolls the image by knob_shift px -> known MD per job
        shift = knob_shift(row.inversion_step, row.lora_steps, row.unet_block)
        assert row.mean_distance == pytest.approx(expected_md(samples, shift_x=shift), abs=1e-9)
        assert row.n_samples == len(samples) and row.weights == "random"
    for suffix in (".png", ".pdf"):
        assert (sweep / f"fig7{suffix}").stat().st_size > 1000
    return summary


def test_fig7_sweep_subset_writes_summary_and_figure(run_app, tmp_path, tiny_samples):
    sweep = tmp_path / "sweep"
    run_app("-m", "experiment=fig7", *FAST, "ablation=unet_block_2,paper_default", f"hydra.sweep.dir={sweep}")
    summary = _check_sweep(sweep, 2, tiny_samples)
    assert list(summary["override:ablation"]) == ["unet_block_2", "paper_default"]
    assert list(summary["unet_block"]) == [2, 3]


@pytest.mark.slow  # 14 jobs through the CLI: ~30-60 s on 2 busy cores
def test_fig7_full_offline_multirun(cli, tmp_path, tiny_samples):
    sweep = tmp_path / "fig7"
    proc = cli("-m", "experiment=fig7", *FAST, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = _check_sweep(sweep, 14, tiny_samples)
    points = set(summary[list(KNOBS)].itertuples(index=False, name=None))
    assert len(points) == 14  # 5 + 6 + 4 points, the paper default shared by (b) and (c)
    assert sorted(summary.loc[(summary.lora_steps == 80) & (summary.unet_block == 3), "inversion_step"]) == [
        10,
        20,
        30,
        35,
        40,
        50,
    ]


@pytest.mark.slow  # submitit starts one python process per job
def test_submitit_local_two_point_sweep(cli, tmp_path, tiny_samples):
    sweep = tmp_path / "submitit"
    proc = cli(  # the fig7_lora_steps experiment (summary + figure) with its sweep cut to two points
        "-m", "experiment=fig7_lora_steps", "hydra/launcher=submitit_local", *FAST, "method.lora_steps=40,80",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = _check_sweep(sweep, 2, tiny_samples)
    assert list(summary["lora_steps"]) == [40, 80]
    assert (sweep / ".submitit").is_dir()


# DragDiffusion on the tiny backbone with few steps (the knobs' meaning is kept; only the budget shrinks).
TINY_DRAGDIFFUSION = (
    "method=dragdiffusion",
    "model=tiny",  # preset=offline would pick the toy model
    "eval=fast",
    "hydra/job_logging=none",
    "dataset.n=1",
    "method.lora_steps=2",
    "method.max_iters=2",
    "method.n_inference_steps=10",
    "method.inversion_step=7",
)


@pytest.mark.slow  # real DragDiffusion code path: minutes on 2 busy CPU cores
def test_fig7_unet_block_sweep_with_tiny_dragdiffusion(cli, tmp_path):
    sweep = tmp_path / "blocks"
    proc = cli(
        "-m", "experiment=fig7_unet_block", *TINY_DRAGDIFFUSION, f"hydra.sweep.dir={sweep}", timeout=1800
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = pd.read_csv(sweep / "summary.csv")
    assert list(summary["unet_block"]) == [1, 2, 3, 4]
    assert (summary["n_samples"] == 1).all() and (summary["method_weights"] == "random").all()
    assert summary["mean_distance"].notna().all()
    assert (sweep / "fig7.png").stat().st_size > 1000
