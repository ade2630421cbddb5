"""Figures from result files only: the Fig. 7 ablation panels (protocol §4) and a grid of edits.

`python -m experiments.figures SWEEP_DIR... --out DIR` redraws from summary.csv (or the job dirs) without
recomputing anything. Plot functions take DataFrames and return Figures; no I/O inside them.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from eval.metrics import MD_UNIT, METRICS, Metric
from experiments.results_store import EDITED_IMAGE, EDITS_DIR, RESULTS_CSV
from experiments.sweep_summary import MULTIRUN_YAML, SUMMARY_CSV, collect_sweep, sweep_knob_defaults

log = logging.getLogger(__name__)

MD_COLOR, IF_COLOR = "tab:red", "tab:blue"
NOT_COMPARABLE = "offline (random/tiny/toy) weights — not comparable to papers"
FIG7_KNOBS = ("method.inversion_step", "method.lora_steps", "method.unet_block")
UNRECORDED_SCALE = "unrecorded"  # results written before md_scale was recorded
FAILED_MARKER = dict(marker="X", markersize=9, color="black", linestyle="none")  # a point with failed samples


class MixedScaleError(ValueError):
    """MDs measured in different units (pixel sizes) were about to be drawn or tabled side by side."""


def check_md_scale(labels: pd.Series, what: str) -> str:
    """The one MD unit shared by `labels` (md_scale per run or job); refuse to mix units.

    Args:
        labels: md_scale values (eval.aggregate.md_scale); missing ones count as UNRECORDED_SCALE.
        what: what is being drawn or compared, for the message.

    Returns:
        The shared label.

    Raises:
        MixedScaleError: one line listing the units found and the fix.
    """
    values = labels.astype(object).where(labels.notna(), UNRECORDED_SCALE).astype(str)
    counts = values.value_counts(sort=False).sort_index()
    if len(counts) > 1:
        found = ", ".join(f"{label} ({n})" for label, n in counts.items())
        raise MixedScaleError(
            f"{what}: MDs measured at different scales ({found}) are not comparable side by side; use runs "
            "with the same dataset.resize, or eval.variant=normalised (MD as % of the image side)"
        )
    if len(counts) == 1 and counts.index[0] == UNRECORDED_SCALE:
        log.warning("%s: the MD scale of these results was not recorded (older runs); not checked", what)
    return str(counts.index[0]) if len(counts) else UNRECORDED_SCALE


@dataclass(frozen=True)
class Panel:
    """One Fig. 7 panel: the knob column and its axis label (its default comes from the sweep's config)."""

    knob: str
    label: str


FIG7_PANELS = (
    Panel("inversion_step", "(a) DDIM inversion step t (of 50)"),
    Panel("lora_steps", "(b) LoRA fine-tuning steps"),
    Panel("unet_block", "(c) UNet decoder block (1-based)"),
)


def panel_rows(summary: pd.DataFrame, panel: Panel, defaults: Mapping[str, Any]) -> pd.DataFrame:
    """Rows of one panel: jobs whose *other* Fig. 7 knobs sit at their defaults, sorted by the knob.

    This is how the union sweep (experiment=fig7) splits into three panels; the shared default point
    appears in every panel. A knob without a known default does not filter.

    Args:
        summary: summary.csv rows.
        panel: the panel.
        defaults: {knob: default} from the sweep's config (experiments.sweep_summary.knob_defaults).
    """
    if panel.knob not in summary:
        return summary.iloc[0:0]
    rows = summary[summary[panel.knob].notna()]
    for other in FIG7_PANELS:
        if other.knob != panel.knob and other.knob in rows and other.knob in defaults:
            rows = rows[rows[other.knob].isna() | (rows[other.knob] == defaults[other.knob])]
    return rows.sort_values(panel.knob)


def _panels(summary: pd.DataFrame, defaults: Mapping[str, Any]) -> list[tuple[Panel, pd.DataFrame]]:
    panels = [(p, panel_rows(summary, p, defaults)) for p in FIG7_PANELS]
    return [(p, rows) for p, rows in panels if p.knob in rows and rows[p.knob].nunique() > 1]


LINE_STYLES = ("o-", "s--", "^:", "d-.")  # the 1st, 2nd, ... metric drawn on one axis


def _drawn_metrics(rows: pd.DataFrame) -> list[Metric]:
    """Declared metrics (eval.metrics) drawn in figures with a value in `rows`: core ones always, others when
    finite."""

    def has_values(m: Metric) -> bool:
        return m.name in rows and bool(np.isfinite(rows[m.name].to_numpy(dtype=float)).any())

    drawn = [m for m in METRICS if m.in_figures]
    return [m for m in drawn if (not m.optional and m.name in rows) or (m.optional and has_values(m))]


def _draw_panel(ax: Axes, x: np.ndarray, rows: pd.DataFrame, xlabel: str, default: float | None) -> None:
    """Distances (MD-unit metrics) on the left axis, unitless ones (fidelities) on the right, CI bands."""
    ax_if = ax.twinx()
    on_axis: dict[int, list[Metric]] = {0: [], 1: []}
    for metric in _drawn_metrics(rows):
        on_axis[0 if metric.unit == MD_UNIT else 1].append(metric)
    for side, metrics in on_axis.items():
        axis, color = (ax, MD_COLOR) if side == 0 else (ax_if, IF_COLOR)
        for k, metric in enumerate(metrics):
            y = rows[metric.name].to_numpy(dtype=float)
            axis.plot(x, y, LINE_STYLES[k % len(LINE_STYLES)], color=color, label=metric.display)
            low, high = f"{metric.name}_ci_low", f"{metric.name}_ci_high"
            if low in rows and high in rows:
                axis.fill_between(
                    x,
                    rows[low].to_numpy(dtype=float),
                    rows[high].to_numpy(dtype=float),
                    color=color,
                    alpha=0.2,
                    linewidth=0,
                )
        if metrics:
            axis.set_ylabel(metrics[0].display, color=color)
            axis.tick_params(axis="y", colors=color)
        if len(metrics) > 1:  # e.g. MD and the toy world's GT distance share the left axis
            key = "  ".join(f"{LINE_STYLES[k][1:]} {m.label}" for k, m in enumerate(metrics))
            axis.legend(
                handles=[],
                title=key,
                title_fontsize=7,
                loc="upper left" if side == 0 else "upper right",
                frameon=False,
            )
    _mark_failures(ax, x, rows)
    if default is not None:
        ax.axvline(default, color="gray", linestyle="--", linewidth=1)
        ax.annotate(
            "default",
            (default, 1.0),
            xycoords=("data", "axes fraction"),
            ha="center",
            va="bottom",
            fontsize=8,
            color="gray",
        )
    ax.set_xlabel(xlabel)
    ax.set_xticks(x)


def _mark_failures(ax: Axes, x: np.ndarray, rows: pd.DataFrame) -> None:
    """An X on every MD point whose job lost samples, annotated "<n> failed" (or "job failed")."""
    flags = rows.reindex(columns=["n_failed", "job_status"])  # absent columns: nothing known to have failed
    n_failed = flags["n_failed"].fillna(0).to_numpy(dtype=float)
    status = flags["job_status"].fillna("ok").astype(str)
    md = rows["mean_distance"].to_numpy(dtype=float)
    for xi, yi, n, job_status in zip(x, md, n_failed, status, strict=True):
        if n == 0 and job_status == "ok":
            continue
        text = f"{int(n)} failed" if job_status != "failed" else "job failed"
        if np.isfinite(yi):
            ax.plot([xi], [yi], **FAILED_MARKER)
            ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=7)
        else:  # no MD at all: mark the x position at the bottom of the panel
            ax.plot([xi], [0.03], transform=ax.get_xaxis_transform(), **FAILED_MARKER)
            ax.annotate(text, (xi, 0.08), xycoords=("data", "axes fraction"), ha="center", fontsize=7)


def plot_fig7(summary: pd.DataFrame, defaults: Mapping[str, Any] | None = None) -> Figure:
    """MD (↓, left axis) and IF (↑, right axis) against each swept Fig. 7 knob, with 95 % CI bands.

    Args:
        summary: one row per job with columns mean_distance, image_fidelity, their `_ci_low`/`_ci_high`,
            `weights`, and any of inversion_step / lora_steps / unet_block (experiments.sweep_summary).
        defaults: {knob: value} of the sweep's base config (sweep_summary.knob_defaults, sweep_knob_defaults):
            marked "default" on its panel and used to split a union sweep into panels; None = none known.

    Returns:
        One panel per knob that varies (like the paper's Fig. 7); when none varies, one panel of MD/IF per
        job. The title flags offline weights (NOT_COMPARABLE, with the jobs' labels) unless every job used
        real weights, and names the MD unit; points whose job lost samples carry an X and "<n> failed".

    Raises:
        MixedScaleError: the jobs' MDs are in different units (md_scale column).
    """
    scale = check_md_scale(summary["md_scale"] if "md_scale" in summary else pd.Series([None]), "Fig. 7")
    defaults = dict(defaults or {})
    panels = _panels(summary, defaults)
    n = max(1, len(panels))
    fig = Figure(figsize=(4.6 * n, 3.6), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)
    if panels:
        for ax, (panel, rows) in zip(axes[0], panels, strict=True):
            default = defaults.get(panel.knob)
            _draw_panel(ax, rows[panel.knob].to_numpy(dtype=float), rows, panel.label, default)
    else:
        _draw_panel(axes[0][0], np.arange(len(summary), dtype=float), summary, "job", None)
    weights = set(summary["weights"].dropna().astype(str)) if "weights" in summary else set()
    labels = ", ".join(sorted(weights - {"real"}))
    title = f"MD (↓, {scale}) and IF (↑)" + ("" if weights <= {"real"} else f"  [{NOT_COMPARABLE}: {labels}]")
    if _has_failures(summary):
        title += "\nX = point whose job lost samples (n failed)"
    fig.suptitle(title, fontsize=10, color="black" if weights <= {"real"} else "darkred")
    return fig


def _has_failures(summary: pd.DataFrame) -> bool:
    failed = "n_failed" in summary and bool((summary["n_failed"].fillna(0) > 0).any())
    return failed or ("job_status" in summary and bool((summary["job_status"].fillna("ok") != "ok").any()))


def plot_edit_grid(job_dirs: list[Path], max_samples: int = 4) -> Figure:
    """Edited images (rows = jobs, columns = the first samples) read from each job's edits/ folder."""
    tables = [pd.read_csv(Path(d) / RESULTS_CSV) for d in job_dirs]
    ids = sorted({s for t in tables for s in t.loc[t["status"] == "ok", "sample_id"]})[:max_samples]
    n_rows, n_cols = max(1, len(job_dirs)), max(1, len(ids))
    fig = Figure(figsize=(1.8 * n_cols, 1.8 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, job_dir in enumerate(job_dirs):
        for c, sample_id in enumerate(ids):
            path = Path(job_dir) / EDITS_DIR / sample_id / EDITED_IMAGE
            if path.exists():
                axes[r][c].imshow(np.asarray(Image.open(path)))
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
            if r == 0:
                axes[r][c].set_title(sample_id, fontsize=7)
        axes[r][0].set_ylabel(Path(job_dir).name, fontsize=7)
    return fig


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """Save as <stem>.png and <stem>.pdf; returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=150)
    return paths


def load_summaries(sweep_dirs: list[str | Path]) -> pd.DataFrame:
    """Concatenate the summary.csv of each sweep dir (rebuilt from its job dirs when missing)."""
    frames = []
    for sweep_dir in map(Path, sweep_dirs):
        path = sweep_dir / SUMMARY_CSV
        frame = pd.read_csv(path) if path.exists() else collect_sweep(sweep_dir, list(FIG7_KNOBS))
        frames.append(frame.assign(sweep=str(sweep_dir)))
    return pd.concat(frames, ignore_index=True)


def main(argv: list[str] | None = None) -> None:
    """CLI: `python -m experiments.figures SWEEP_DIR... --out DIR` -> DIR/fig7.png, DIR/fig7.pdf."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "sweep_dirs", nargs="+", type=Path, help="multirun dirs (with summary.csv or job dirs)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for fig7.png / fig7.pdf")
    args = parser.parse_args(argv)
    missing = [d for d in args.sweep_dirs if not d.is_dir()]
    if missing:
        parser.error(f"not a directory: {', '.join(map(str, missing))}")
    defaults: dict[str, Any] = {}
    for sweep_dir in args.sweep_dirs:  # each sweep's base config (Hydra's multirun.yaml); the first one wins
        defaults = {**sweep_knob_defaults(sweep_dir, list(FIG7_KNOBS)), **defaults}
    if not defaults:
        log.warning("no %s in %s: the paper defaults are not marked", MULTIRUN_YAML, args.sweep_dirs)
    try:
        figure = plot_fig7(load_summaries(args.sweep_dirs), defaults)
    except MixedScaleError as err:
        raise SystemExit(f"error: {err}") from None  # one line, exit 1
    for path in save_figure(figure, args.out / "fig7"):
        print(path)


if __name__ == "__main__":
    main()
