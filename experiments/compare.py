"""Compare finished runs side by side: `python -m experiments.compare RUN_DIR... [--out DIR]`.

Reads each job dir's metrics.json and results.csv (nothing is recomputed) and writes comparison.csv,
comparison.md and md_vs_if.png/.pdf: method, MD and IF with 95 % CIs, seconds per edit, peak memory,
coverage (= ok / total samples), failed / unsupported counts, the MD unit and the weights label. Runs whose
MDs are in different units (md_scale) are refused unless every run uses eval.variant=normalised.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
from matplotlib.figure import Figure

from eval.metrics import METRICS, Metric
from experiments.figures import NOT_COMPARABLE, MixedScaleError, check_md_scale, save_figure
from experiments.results_store import METRICS_JSON, RESULTS_CSV, atomic_write_bytes, atomic_write_csv

COLUMNS = (
    "run",
    "method",
    # every declared metric (eval.metrics): value, CI bounds; optional ones are dropped when no run has them
    *(f"{m.name}{suffix}" for m in METRICS for suffix in ("", "_ci_low", "_ci_high")),
    "seconds_per_edit",
    "peak_mem_mb",
    "coverage",
    "n_ok",
    "n_failed",
    "n_unsupported",
    "n_total",
    "md_scale",
    "weights",
    "config_hash",
)


def load_run(run_dir: str | Path) -> dict:
    """One comparison row from a job dir (metrics.json + results.csv)."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / METRICS_JSON).read_text())
    results = pd.read_csv(run_dir / RESULTS_CSV)
    ok = results[results["status"] == "ok"]
    target = str((metrics.get("config") or {}).get("method", {}).get("_target_", "?"))
    values: dict = {}
    for metric in METRICS:
        if metric.name in metrics or not metric.optional:
            low, high = metrics.get(f"{metric.name}_ci") or (math.nan, math.nan)
            values.update(
                {
                    metric.name: metrics.get(metric.name, math.nan),
                    f"{metric.name}_ci_low": low,
                    f"{metric.name}_ci_high": high,
                }
            )
    return {
        "run": str(run_dir),
        "method": target.rsplit(".", 1)[-1],
        **values,
        "seconds_per_edit": float(ok["seconds"].mean()) if len(ok) else math.nan,
        "peak_mem_mb": float(results["peak_mem_mb"].max()) if "peak_mem_mb" in results else math.nan,
        "coverage": len(ok) / len(results) if len(results) else math.nan,
        "n_ok": len(ok),
        "n_failed": int((results["status"] == "failed").sum()),
        "n_unsupported": int((results["status"] == "unsupported").sum()),
        "n_total": len(results),
        "md_scale": metrics.get("md_scale"),  # None for runs written before it was recorded
        "weights": metrics.get("weights", "?"),
        "config_hash": metrics.get("config_hash"),
    }


def compare_runs(run_dirs: list[str | Path]) -> pd.DataFrame:
    """The comparison table, one row per run dir, in the given order.

    Raises:
        MixedScaleError: the runs' MDs are in different units (e.g. different dataset.resize).
    """
    table = pd.DataFrame([load_run(d) for d in run_dirs], columns=list(COLUMNS))
    check_md_scale(table["md_scale"], "compare")
    absent = [m for m in METRICS if m.optional and table[m.name].isna().all()]
    return table.drop(columns=[f"{m.name}{s}" for m in absent for s in ("", "_ci_low", "_ci_high")])


def _table_metrics(table: pd.DataFrame) -> list[Metric]:
    return [m for m in METRICS if m.name in table]


def _fmt(value: float, digits: int) -> str:
    return (
        "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
    )


def _with_ci(value: float, low: float, high: float, digits: int) -> str:
    return f"{_fmt(value, digits)} [{_fmt(low, digits)}, {_fmt(high, digits)}]"


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub Markdown table: each metric (MD, IF, ...) as "value [lo, hi]"."""
    metrics = _table_metrics(table)
    head = " | ".join(f"{m.display} [95% CI]" for m in metrics)
    lines = [
        f"| method | {head} | s / edit | peak MB | coverage | failed | unsupported | MD unit | weights "
        "| run |",
        "|---" * (len(metrics) + 9) + "|",
    ]
    for r in table.to_dict("records"):
        r = SimpleNamespace(**r)
        cells = " | ".join(
            _with_ci(*(getattr(r, f"{m.name}{s}") for s in ("", "_ci_low", "_ci_high")), m.digits)
            for m in metrics
        )
        lines.append(
            f"| {r.method} | {cells} | {_fmt(r.seconds_per_edit, 2)} | {_fmt(r.peak_mem_mb, 0)} | "
            f"{r.n_ok}/{r.n_total} ({_fmt(100 * r.coverage, 0)}%) | {r.n_failed} | {r.n_unsupported} | "
            f"{r.md_scale} | {r.weights} | {r.run} |"
        )
    if (table["weights"] != "real").any():
        lines.append(f"\nRows with weights other than `real` are {NOT_COMPARABLE}.")
    return "\n".join(lines) + "\n"


def plot_md_vs_if(table: pd.DataFrame) -> Figure:
    """Scatter of MD (x, lower is better) against IF (y, higher is better), with CI error bars."""
    fig = Figure(figsize=(4.8, 3.8), layout="constrained")
    ax = fig.subplots()
    duplicated = table["method"].duplicated(keep=False)
    for r, dup in zip(table.itertuples(), duplicated, strict=True):
        label = f"{r.method} ({Path(r.run).name})" if dup else r.method
        ax.errorbar(
            r.mean_distance,
            r.image_fidelity,
            xerr=[[r.mean_distance - r.mean_distance_ci_low], [r.mean_distance_ci_high - r.mean_distance]],
            yerr=[
                [r.image_fidelity - r.image_fidelity_ci_low],
                [r.image_fidelity_ci_high - r.image_fidelity],
            ],
            fmt="o",
            capsize=3,
            label=label,
        )
    units = table["md_scale"].dropna()  # one unit: compare_runs refused mixed ones
    ax.set_xlabel(f"Mean Distance (↓, {units.iloc[0] if len(units) else 'unit unrecorded'})")
    ax.set_ylabel("Image Fidelity (↑)")
    ax.legend(fontsize=8)
    if (table["weights"] != "real").any():
        ax.set_title(NOT_COMPARABLE, fontsize=9, color="darkred")
    return fig


def main(argv: list[str] | None = None) -> None:
    """CLI: write comparison.csv, comparison.md and md_vs_if.png/.pdf to --out; print the Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "run_dirs", nargs="+", type=Path, help="job dirs holding metrics.json and results.csv"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("comparison"), help="output folder (default: ./comparison)"
    )
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.run_dirs if not (d / METRICS_JSON).exists()]
    if missing:
        parser.error(f"no {METRICS_JSON} in: {', '.join(missing)} (run `python -m experiments.run` first)")
    try:
        table = compare_runs(args.run_dirs)
    except MixedScaleError as err:
        raise SystemExit(f"error: {err}") from None  # one line, exit 1
    atomic_write_csv(args.out / "comparison.csv", table)
    markdown = to_markdown(table)
    atomic_write_bytes(args.out / "comparison.md", markdown.encode())
    save_figure(plot_md_vs_if(table), args.out / "md_vs_if")
    print(markdown)


if __name__ == "__main__":
    main()
