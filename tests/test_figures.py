"""Figures and comparison tables are drawn from result files only, with the right points in each panel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from experiments import figures
from experiments.figures import NOT_COMPARABLE, panel_rows, plot_fig7
from experiments.sweep_summary import collect_sweep

FIG7_POINTS = (
    [(t, 80, 3) for t in (10, 20, 30, 40, 50)]
    + [(35, s, 3) for s in (0, 20, 40, 60, 100)]
    + [(35, 80, b) for b in (1, 2, 4)]
    + [(35, 80, 3)]
)


def fig7_summary(weights: str = "random") -> pd.DataFrame:
    """A summary.csv as the fig7 sweep writes it; MD = t + steps / 10 + block (easy to read back)."""
    rows = []
    for job, (t, s, b) in enumerate(FIG7_POINTS):
        md = t + s / 10 + b
        rows.append(
            dict(
                job=job,
                inversion_step=t,
                lora_steps=s,
                unet_block=b,
                mean_distance=md,
                mean_distance_ci_low=md - 1,
                mean_distance_ci_high=md + 1,
                image_fidelity=1 - md / 100,
                image_fidelity_ci_low=0.5,
                image_fidelity_ci_high=1.0,
                weights=weights,
            )
        )
    return pd.DataFrame(rows)


PAPER_DEFAULTS = {"inversion_step": 35, "lora_steps": 80, "unet_block": 3}  # conf/method/dragdiffusion.yaml


def _md_lines(fig) -> list[tuple[list[float], list[float]]]:
    primary = [ax for ax in fig.axes if ax.get_ylabel() == "MD (↓)"]
    return [(list(ax.lines[0].get_xdata()), list(ax.lines[0].get_ydata())) for ax in primary]


def test_fig7_has_one_panel_per_ablation_with_the_shared_default_point():
    fig = plot_fig7(fig7_summary(), PAPER_DEFAULTS)
    (xa, ya), (xb, yb), (xc, yc) = _md_lines(fig)
    assert xa == [10, 20, 30, 35, 40, 50] and ya == [t + 8 + 3 for t in xa]
    assert xb == [0, 20, 40, 60, 80, 100] and yb == [35 + s / 10 + 3 for s in xb]
    assert xc == [1, 2, 3, 4] and yc == [35 + 8 + b for b in xc]
    assert NOT_COMPARABLE in fig._suptitle.get_text()
    assert len(fig.axes) == 6  # three panels, each with a twin IF axis


def test_real_weights_are_not_labelled_and_single_sweeps_get_one_panel():
    lora_only = fig7_summary("real").query("inversion_step == 35 and unet_block == 3")
    fig = plot_fig7(lora_only, PAPER_DEFAULTS)
    assert [x for x, _ in _md_lines(fig)] == [[0, 20, 40, 60, 80, 100]]
    assert NOT_COMPARABLE not in fig._suptitle.get_text()
    rows = panel_rows(lora_only, figures.FIG7_PANELS[1], PAPER_DEFAULTS)
    assert list(rows["lora_steps"]) == [0, 20, 40, 60, 80, 100]


def test_a_sweep_without_fig7_knobs_gets_one_panel_per_job():
    summary = pd.DataFrame(
        dict(mean_distance=[3.0, 4.0], image_fidelity=[0.9, 0.8], weights=["real", "real"])
    )
    ((x, y),) = _md_lines(plot_fig7(summary))
    assert x == [0, 1] and y == [3.0, 4.0]


def _fake_job(
    job_dir: Path, knobs: tuple[int, int, int], md: float, statuses: list[str], md_scale: str = "px@512w"
) -> None:
    (job_dir / ".hydra").mkdir(parents=True)
    t, s, b = knobs
    (job_dir / ".hydra/overrides.yaml").write_text(yaml.safe_dump([f"method.lora_steps={s}", "logger=none"]))
    (job_dir / "config_resolved.yaml").write_text(
        yaml.safe_dump(
            {"method": {"_target_": "x.DragDiffusion", "inversion_step": t, "lora_steps": s, "unet_block": b}}
        )
    )
    metrics = dict(
        mean_distance=md,
        mean_distance_ci=[md - 1, md + 1],
        image_fidelity=0.9,
        image_fidelity_ci=[0.85, 0.95],
        n_samples=statuses.count("ok"),
        n_ok=statuses.count("ok"),
        n_pairs=3,
        n_failed=statuses.count("failed"),
        md_scale=md_scale,
        weights="random",
        config={"method": {"_target_": "x.DragDiffusion"}},
    )
    (job_dir / "metrics.json").write_text(json.dumps(metrics))
    pd.DataFrame(
        dict(
            sample_id=[f"a/{i}" for i in range(len(statuses))],
            status=statuses,
            seconds=[2.0, 4.0, 6.0][: len(statuses)],
            peak_mem_mb=[100.0, 300.0, 200.0][: len(statuses)],
        )
    ).to_csv(job_dir / "results.csv", index=False)


def test_figures_cli_redraws_from_job_dirs_without_summary(tmp_path):
    sweep = tmp_path / "sweep"
    for job, steps in enumerate((40, 80)):
        _fake_job(sweep / str(job), (35, steps, 3), md=10.0 + job, statuses=["ok", "ok"])
    collected = collect_sweep(sweep, list(figures.FIG7_KNOBS))
    assert list(collected["lora_steps"]) == [40, 80] and list(collected["override:method.lora_steps"]) == [
        "40",
        "80",
    ]
    assert "override:logger" not in collected  # not swept
    figures.main([str(sweep), "--out", str(tmp_path / "figs")])
    for suffix in (".png", ".pdf"):
        assert (tmp_path / "figs" / f"fig7{suffix}").stat().st_size > 1000


def test_figures_refuse_mds_of_different_scales(tmp_path):  # compare's refusal: tests/test_compare.py
    _fake_job(tmp_path / "sweep/0", (35, 40, 3), md=30.0, statuses=["ok"], md_scale="px@512w")
    _fake_job(tmp_path / "sweep/1", (35, 80, 3), md=15.0, statuses=["ok"], md_scale="px@256w")
    with pytest.raises(SystemExit, match="Fig. 7: MDs measured at different scales"):
        figures.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "figs")])
    summary = collect_sweep(tmp_path / "sweep", list(figures.FIG7_KNOBS))
    with pytest.raises(figures.MixedScaleError):
        plot_fig7(summary)
    # the normalised variant is scale-free: the same two sizes may sit side by side
    for job in ("0", "1"):
        _fake_job(tmp_path / "norm" / job, (35, 40 * (1 + int(job)), 3), 5.0, ["ok"], "pct_of_max_side")
    fig = plot_fig7(collect_sweep(tmp_path / "norm", list(figures.FIG7_KNOBS)))
    assert "pct_of_max_side" in fig._suptitle.get_text()


def test_fig7_marks_points_whose_jobs_lost_samples():
    summary = fig7_summary().assign(n_failed=0, job_status="ok", md_scale="px@512w")
    lora_40 = (summary["lora_steps"] == 40) & (summary["inversion_step"] == 35)
    summary.loc[lora_40, "n_failed"] = 3
    all_failed = (summary["unet_block"] == 4) & (summary["lora_steps"] == 80)
    summary.loc[all_failed, ["n_failed", "job_status", "mean_distance"]] = [5, "all_failed", np.nan]
    fig = plot_fig7(summary, PAPER_DEFAULTS)
    md_axes = [ax for ax in fig.axes if ax.get_ylabel() == "MD (↓)"]
    texts = {ax.get_xlabel(): [t.get_text() for t in ax.texts] for ax in md_axes}
    assert texts["(b) LoRA fine-tuning steps"].count("3 failed") == 1
    assert texts["(c) UNet decoder block (1-based)"].count("5 failed") == 1
    assert not any("failed" in t for t in texts["(a) DDIM inversion step t (of 50)"])
    markers = [ln for ax in fig.axes for ln in ax.lines if ln.get_marker() == "X"]
    assert len(markers) == 2
    assert "X = point whose job lost samples" in fig._suptitle.get_text()
    assert "MD (↓, px@512w)" in fig._suptitle.get_text()


def test_sweep_summary_counts_failures_and_exits_1_when_a_job_has_no_result(tmp_path):
    from omegaconf import OmegaConf

    from experiments.sweep_callback import Fig7Summary

    sweep = tmp_path / "sweep"
    _fake_job(sweep / "0", (35, 40, 3), md=30.0, statuses=["ok", "failed"])
    _fake_job(sweep / "1", (35, 80, 3), md=float("nan"), statuses=["failed", "failed"])
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    with pytest.raises(SystemExit) as err:
        Fig7Summary(list(figures.FIG7_KNOBS)).on_multirun_end(config)
    assert err.value.code == 1
    summary = pd.read_csv(sweep / "summary.csv")
    assert list(summary["n_failed"]) == [1, 2] and list(summary["n_ok"]) == [1, 0]
    assert list(summary["job_status"]) == ["ok", "all_failed"] and set(summary["md_scale"]) == {"px@512w"}
    assert (sweep / "fig7.png").exists()  # everything is written before the non-zero exit


def _default_markers(fig) -> dict[str, list[float]]:
    """Panel x label -> x of its "default" annotation."""
    return {
        ax.get_xlabel(): [t.xy[0] for t in ax.texts if t.get_text() == "default"]
        for ax in fig.axes
        if ax.get_xlabel()
    }


def test_the_default_marker_and_panel_split_come_from_the_sweep_config(tmp_path):
    """No second copy of the paper numbers: the defaults are the knobs' values in the multirun's config."""
    from omegaconf import OmegaConf

    from experiments.sweep_summary import knob_defaults, sweep_knob_defaults

    config = OmegaConf.create({"method": {"inversion_step": 35, "lora_steps": 80, "unet_block": 3}})
    defaults = knob_defaults(config, list(figures.FIG7_KNOBS))
    assert defaults == PAPER_DEFAULTS
    markers = _default_markers(plot_fig7(fig7_summary(), defaults))
    assert markers == {p.label: [PAPER_DEFAULTS[p.knob]] for p in figures.FIG7_PANELS}
    # another base config (e.g. method.lora_steps=60 on the command line) moves the marker with it
    lora_only = fig7_summary().query("inversion_step == 35 and unet_block == 3")
    assert _default_markers(plot_fig7(lora_only, {**defaults, "lora_steps": 60})) == {
        "(b) LoRA fine-tuning steps": [60]
    }
    assert _default_markers(plot_fig7(lora_only)) == {"(b) LoRA fine-tuning steps": []}  # none known
    (tmp_path / "multirun.yaml").write_text(OmegaConf.to_yaml(config))  # what Hydra writes in a sweep dir
    assert sweep_knob_defaults(tmp_path, list(figures.FIG7_KNOBS)) == PAPER_DEFAULTS
    assert sweep_knob_defaults(tmp_path / "elsewhere", list(figures.FIG7_KNOBS)) == {}


def test_figures_and_the_sweep_callback_import_without_a_cycle():
    import subprocess
    import sys

    code = (
        "import sys, experiments.figures; assert 'experiments.sweep_callback' not in sys.modules; "
        "import experiments.sweep_summary as s; assert 'experiments.figures' not in s.__dict__"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_only_fig7_experiments_draw_the_figure(make_cfg):
    base = make_cfg("method=identity").hydra.callbacks
    assert base.sweep_summary._target_ == "experiments.sweep_callback.SweepSummary"
    assert "weights_preflight" in base
    for experiment in ("fig7", "fig7_inversion_step", "fig7_lora_steps", "fig7_unet_block"):
        callbacks = make_cfg(f"experiment={experiment}").hydra.callbacks
        assert callbacks.sweep_summary._target_ == "experiments.sweep_callback.Fig7Summary", experiment
        assert list(callbacks.sweep_summary.knobs) == list(figures.FIG7_KNOBS)
        assert "weights_preflight" in callbacks, experiment
