"""Compare finished runs fairly: `python -m experiments.compare RUN_DIR... [--out DIR]`.

Methods cover different samples (DragGAN routes some categories and marks the rest `unsupported`; a method may
fail on a few), so one run's MD/IF beside another's compares different samples. This module therefore reports:

1. the common subset: the sample ids `ok` in every compared run; every declared metric (eval.metrics) is
   recomputed on it from each run's results.csv / pairs.csv with eval.aggregate.summarize, the aggregation
   and bootstrap seed the job used (config.aggregate in its metrics.json), so a run whose samples are all ok
   gets exactly its metrics.json numbers. Every run resamples the subset in the same sample order, so the
   bootstrap draws the same samples for each method.
2. full coverage: each run's own metrics.json numbers, with coverage n_ok / n_total.
3. per category (the common subset; DragBench's ten in the paper's appendix order), n per cell.
4. coverage: every sample's status per run (samples.csv) and the samples each run lacks.

Time per edit is `seconds_edit` (results.csv): the wall time of `method.edit` with the models already
loaded; scoring (`seconds_eval`) and the Drag-Back edit are excluded. Per image = its mean over samples, per
pair = its sum / the pairs' count. Peak memory is the largest `peak_mem_mb` (methods.base.REQUIRED_INFO: CUDA
max allocated during the edit; on CPU the process's peak RSS so far, which includes the evaluator's models).

Writes comparison.md (also printed), comparison.csv (the common-subset table), full_coverage.csv,
per_category.csv, samples.csv and md_vs_if.png/.pdf (MD vs IF on the common subset, CIs in both directions).
Refuses, in one line: runs that share no sample (different datasets), MDs in different units (md_scale), or
an empty common subset.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from hydra.utils import get_class
from matplotlib.figure import Figure

from dragbench.bench_io import CATEGORIES
from eval.aggregate import summarize
from eval.metrics import METRICS, Metric
from experiments.figures import NOT_COMPARABLE, MixedScaleError, check_md_scale, save_figure
from experiments.results_store import METRICS_JSON, ResultsStore, atomic_write_bytes, atomic_write_csv

CI_SUFFIXES = ("", "_ci_low", "_ci_high")
METRIC_COLUMNS = tuple(f"{m.name}{s}" for m in METRICS for s in CI_SUFFIXES)
# results.csv timing columns that are not a stage of the edit (job.process_sample)
NOT_EDIT_STAGES = ("seconds", "seconds_edit", "seconds_eval", "seconds_drag_back")
ABSENT = "absent"  # samples.csv status of a sample id the run has no row for
MAX_LISTED = 20  # sample ids listed per run in comparison.md (all of them are in samples.csv)
TIMING_NOTE = (
    "s / image and s / pair: wall seconds of `method.edit` (results.csv `seconds_edit`; models already "
    "loaded, scoring and Drag-Back excluded), mean per image and summed over images / number of pairs. "
    "A LoRA or inversion served from the cache is timed as the lookup. Peak MB: the largest `peak_mem_mb` "
    "(CUDA: max allocated during one edit; CPU: process peak RSS so far, evaluator models included)."
)
FULL_COLUMNS = (
    "run",
    "label",
    "method",
    *METRIC_COLUMNS,
    "seconds_per_image",
    "seconds_per_pair",
    "peak_mem_mb",
    "coverage",
    "n_ok",
    "n_failed",
    "n_unsupported",
    "n_total",
    "md_scale",
    "device",
    "weights",
    "config_hash",
)


class ComparisonError(ValueError):
    """The runs cannot be compared on common samples (no shared sample, or none ok in all of them)."""


@dataclass
class Run:
    """One finished job dir as compare reads it.

    Attributes:
        path: the job dir.
        method: the method's `display_name` (methods.base.DragMethod), else its class name
            (config.method._target_); "?" when metrics.json has no config.
        label: how tables and the figure name it (the method; + the dir when two runs share a method).
        metrics: its metrics.json.
        results: its results.csv rows (failed ones included).
        pairs: its pairs.csv rows.
    """

    path: Path
    method: str
    label: str
    metrics: dict
    results: pd.DataFrame
    pairs: pd.DataFrame

    @property
    def aggregate(self) -> dict:
        """The job's bootstrap settings (conf `aggregate`: n_boot, seed) as summarize's keywords.

        Empty for a metrics.json without config (`python -m eval.score` writes none): it used summarize's
        defaults, which an empty dict selects again.
        """
        recorded = (self.metrics.get("config") or {}).get("aggregate") or {}
        return {key: int(recorded[key]) for key in ("n_boot", "seed") if key in recorded}

    @property
    def reported(self) -> tuple[Metric, ...]:
        """The declared metrics its metrics.json reports (the ones its evaluator measured)."""
        return tuple(m for m in METRICS if m.name in self.metrics)

    @property
    def ok_ids(self) -> list[str]:
        """Its `ok` sample ids in results.csv order."""
        return self.results.loc[self.results["status"] == "ok", "sample_id"].tolist()


@dataclass
class Comparison:
    """Everything compare writes.

    Attributes:
        runs: the compared runs, in the order given.
        common_ids: sample ids ok in every run (the first run's results.csv order).
        common: one row per run: every metric with CIs on the common subset, time, memory.
        full: one row per run: its metrics.json numbers and coverage (`compare_runs`).
        per_category: one row per (subset "common" | "full", category, run): n and metrics with CIs.
        samples: one row per sample id of any run: category and the status in each run (column = label).
    """

    runs: list[Run]
    common_ids: list[str]
    common: pd.DataFrame
    full: pd.DataFrame
    per_category: pd.DataFrame
    samples: pd.DataFrame


# ---- reading -----------------------------------------------------------------------------------------
def method_name(target: str) -> str:
    """How tables name the method `target` (a `_target_` path): its class's `display_name`, else the class
    name; a class that no longer imports (a run from another checkout) keeps its recorded class name."""
    class_name = target.rsplit(".", 1)[-1]
    try:
        return str(getattr(get_class(target), "display_name", class_name))
    except Exception:  # any import failure: keep the recorded name
        return class_name


def load_runs(run_dirs: list[str | Path]) -> list[Run]:
    """Read each job dir; two runs of one method are labelled `<method> (<dir>)`."""
    runs = []
    for run_dir in map(Path, run_dirs):
        metrics = json.loads((run_dir / METRICS_JSON).read_text())
        store = ResultsStore(run_dir, retry_failed=False)  # failed rows too, read as the job reads them
        target = str((metrics.get("config") or {}).get("method", {}).get("_target_", "?"))
        method = method_name(target)
        runs.append(Run(run_dir, method, method, metrics, store.results(), store.pairs()))
    methods = pd.Series([r.method for r in runs])
    for run, duplicated in zip(runs, methods.duplicated(keep=False), strict=True):
        if duplicated:
            run.label = f"{run.method} ({run.path})"
    return runs


def _metric_values(summary: dict, metrics: tuple[Metric, ...]) -> dict:
    """{name, name_ci_low, name_ci_high} for every metric; NaN where `summary` lacks it."""
    values: dict = {}
    for metric in metrics:
        low, high = summary.get(f"{metric.name}_ci") or (math.nan, math.nan)
        values[metric.name] = summary.get(metric.name, math.nan)
        values[f"{metric.name}_ci_low"], values[f"{metric.name}_ci_high"] = low, high
    return values


def _timing(rows: pd.DataFrame) -> dict:
    """Seconds per image / per pair of the edit (seconds_edit) and its stages, peak memory, over `rows`."""
    edit = rows["seconds_edit"].astype(float) if "seconds_edit" in rows else pd.Series(math.nan, rows.index)
    stages = [c for c in rows if c.startswith("seconds_") and c not in NOT_EDIT_STAGES]
    pairs = float(rows["n_pairs"].sum()) if "n_pairs" in rows else math.nan
    return {
        "seconds_per_image": float(edit.mean()) if len(rows) else math.nan,
        "seconds_per_pair": float(edit.sum(min_count=1) / pairs) if pairs else math.nan,
        **{stage: float(rows[stage].astype(float).mean()) for stage in stages},
        "peak_mem_mb": float(rows["peak_mem_mb"].max()) if "peak_mem_mb" in rows else math.nan,
    }


def full_row(run: Run) -> dict:
    """One full-coverage row: the run's own metrics.json numbers, coverage and timing over its ok samples."""
    results = run.results
    ok = results[results["status"] == "ok"]
    optional_present = tuple(m for m in METRICS if m.name in run.metrics or not m.optional)
    timing = _timing(ok)
    return {
        "run": str(run.path),
        "label": run.label,
        "method": run.method,
        **_metric_values(run.metrics, optional_present),
        "seconds_per_image": timing["seconds_per_image"],
        "seconds_per_pair": timing["seconds_per_pair"],
        "peak_mem_mb": float(results["peak_mem_mb"].max()) if "peak_mem_mb" in results else math.nan,
        "coverage": len(ok) / len(results) if len(results) else math.nan,
        "n_ok": len(ok),
        "n_failed": int((results["status"] == "failed").sum()),
        "n_unsupported": int((results["status"] == "unsupported").sum()),
        "n_total": len(results),
        "md_scale": run.metrics.get("md_scale"),  # None for runs written before it was recorded
        "device": run.metrics.get("device"),
        "weights": run.metrics.get("weights", "?"),
        "config_hash": run.metrics.get("config_hash"),
    }


def _drop_absent_metrics(table: pd.DataFrame) -> pd.DataFrame:
    """Drop optional metrics (ground truth, opt-ins) that no row has."""
    absent = [m for m in METRICS if m.optional and (m.name not in table or table[m.name].isna().all())]
    return table.drop(columns=[f"{m.name}{s}" for m in absent for s in CI_SUFFIXES], errors="ignore")


def compare_runs(run_dirs: list[str | Path]) -> pd.DataFrame:
    """The full-coverage table: one row per run dir (its metrics.json numbers), in the given order.

    Raises:
        MixedScaleError: the runs' MDs are in different units (e.g. different dataset.resize).
    """
    table = pd.DataFrame([full_row(r) for r in load_runs(run_dirs)], columns=list(FULL_COLUMNS))
    check_md_scale(table["md_scale"], "compare")
    return _drop_absent_metrics(table)


# ---- the common subset -----------------------------------------------------------------------------
def common_sample_ids(runs: list[Run]) -> list[str]:
    """Sample ids ok in every run, in the first run's results.csv order.

    Raises:
        ComparisonError: the runs share no sample id (different datasets), or none is ok in all of them.
    """
    shared = set.intersection(*(set(r.results["sample_id"]) for r in runs))
    if not shared:
        sizes = "; ".join(
            f"{r.path}: {len(r.results)} samples (e.g. {_first(r.results['sample_id'])})" for r in runs
        )
        raise ComparisonError(
            f"compare: the runs share no sample id, so they ran on different datasets ({sizes}); compare runs "
            "of the same dataset"
        )
    ok_everywhere = set.intersection(*(set(r.ok_ids) for r in runs))
    common = [i for i in runs[0].ok_ids if i in ok_everywhere]
    if not common:
        counts = "; ".join(f"{r.path} ({r.label}): {len(r.ok_ids)} ok of {len(r.results)}" for r in runs)
        raise ComparisonError(
            f"compare: no sample is ok in every run, the common subset is empty ({counts}); drop the run "
            "that covers nothing the others finished, or rerun it on their samples"
        )
    return common


def _first(ids: pd.Series) -> str:
    return str(ids.iloc[0]) if len(ids) else "none"


def _subset(run: Run, ids: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run's rows and pairs of `ids`, rows in the order of `ids` (the same bootstrap order for every run)."""
    rows = run.results.set_index("sample_id", drop=False).loc[ids].reset_index(drop=True)
    return rows, run.pairs[run.pairs["sample_id"].isin(ids)]


def _common_summary(run: Run, ids: list[str]) -> tuple[dict, pd.DataFrame]:
    rows, pairs = _subset(run, ids)
    summary = summarize(rows, pairs, **run.aggregate, metrics=run.reported)
    return summary, rows


def category_order(categories: set[str]) -> list[str]:
    """DragBench's categories in the paper's appendix order (protocol §1); other datasets' sorted."""
    if categories <= set(CATEGORIES):
        return [c for c in CATEGORIES if c in categories]
    return sorted(categories)


def compare(run_dirs: list[str | Path]) -> Comparison:
    """Compare job dirs on their common subset, and each on its full coverage.

    Raises:
        MixedScaleError: MDs in different units.
        ComparisonError: no shared sample, or an empty common subset (one line naming the runs).
    """
    runs = load_runs(run_dirs)
    full = pd.DataFrame([full_row(r) for r in runs], columns=list(FULL_COLUMNS))
    check_md_scale(full["md_scale"], "compare")
    ids = common_sample_ids(runs)
    common_rows, category_rows = [], []
    for run in runs:
        summary, rows = _common_summary(run, ids)
        ident = {"run": str(run.path), "label": run.label}
        common_rows.append(
            {
                **ident,
                "method": run.method,
                "n_samples": summary["n_samples"],
                "n_pairs": summary["n_pairs"],
                **_metric_values(summary, METRICS),
                **_timing(rows),
                "md_scale": summary.get("md_scale", run.metrics.get("md_scale")),
                "device": run.metrics.get("device"),
                "weights": run.metrics.get("weights", "?"),
            }
        )
        full_cells = run.metrics.get("per_category", {})
        for subset, cells in (("common", summary["per_category"]), ("full", full_cells)):
            for category, cell in cells.items():
                counts = {"n_samples": cell.get("n_samples"), "n_pairs": cell.get("n_pairs")}
                category_rows.append(
                    {"subset": subset, "category": category, **ident, **counts, **_metric_values(cell, METRICS)}
                )
    common = _drop_absent_metrics(pd.DataFrame(common_rows))
    absent = [c for c in METRIC_COLUMNS if c not in common]
    per_category = pd.DataFrame(category_rows).drop(columns=absent)
    order = category_order(set(per_category["category"]))
    per_category["category"] = pd.Categorical(per_category["category"], order, ordered=True)
    per_category = per_category.sort_values(["subset", "category"], kind="stable").reset_index(drop=True)
    per_category["category"] = per_category["category"].astype(str)
    return Comparison(runs, ids, common, _drop_absent_metrics(full), per_category, sample_statuses(runs))


def sample_statuses(runs: list[Run]) -> pd.DataFrame:
    """One row per sample id of any run: sample_id, category, then each run's status (ABSENT: no row)."""
    frames = [r.results[["sample_id", "category"]] for r in runs]
    table = pd.concat(frames).drop_duplicates("sample_id").reset_index(drop=True)
    table["category"] = pd.Categorical(table["category"], category_order(set(table["category"])), ordered=True)
    table = table.sort_values(["category", "sample_id"], kind="stable").reset_index(drop=True)
    table["category"] = table["category"].astype(str)
    for run in runs:
        status = run.results.set_index("sample_id")["status"]
        table[run.label] = table["sample_id"].map(status).fillna(ABSENT)
    table["common"] = (table[[r.label for r in runs]] == "ok").all(axis=1)
    return table


# ---- Markdown ----------------------------------------------------------------------------------------
def _table_metrics(table: pd.DataFrame) -> list[Metric]:
    return [m for m in METRICS if m.name in table]


def _fmt(value: float, digits: int) -> str:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return "n/a" if missing else f"{value:.{digits}f}"


def _text(value: object) -> str:
    """A label cell; n/a for a missing one (None, or NaN from a DataFrame)."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _with_ci(row: dict, metric: Metric) -> str:
    value, low, high = (row.get(f"{metric.name}{s}") for s in CI_SUFFIXES)
    if value is None or math.isnan(value):
        return "n/a"
    return f"{_fmt(value, metric.digits)} [{_fmt(low, metric.digits)}, {_fmt(high, metric.digits)}]"


def to_markdown(table: pd.DataFrame) -> str:
    """The full-coverage table (`compare_runs`) as GitHub Markdown: each metric as "value [lo, hi]"."""
    metrics = _table_metrics(table)
    head = " | ".join(f"{m.display} [95% CI]" for m in metrics)
    lines = [
        f"| method | {head} | s / image | s / pair | peak MB | coverage | failed | unsupported | MD unit "
        "| weights | run |",
        "|---" * (len(metrics) + 10) + "|",
    ]
    for r in table.to_dict("records"):
        cells = " | ".join(_with_ci(r, m) for m in metrics)
        lines.append(
            f"| {r['label']} | {cells} | {_fmt(r['seconds_per_image'], 2)} | {_fmt(r['seconds_per_pair'], 2)} | "
            f"{_fmt(r['peak_mem_mb'], 0)} | {r['n_ok']}/{r['n_total']} ({_fmt(100 * r['coverage'], 0)}%) | "
            f"{r['n_failed']} | {r['n_unsupported']} | {_text(r['md_scale'])} | {_text(r['weights'])} | "
            f"{r['run']} |"
        )
    if (table["weights"] != "real").any():
        lines.append(f"\nRows with weights other than `real` are {NOT_COMPARABLE}.")
    return "\n".join(lines) + "\n"


def _stages(row: dict) -> str:
    stages = {
        key.removeprefix("seconds_"): value
        for key, value in row.items()
        if key.startswith("seconds_") and key not in ("seconds_per_image", "seconds_per_pair")
    }
    parts = [f"{name} {value:.2f}" for name, value in stages.items() if not math.isnan(value)]
    return " + ".join(parts) or "n/a"


def common_markdown(comparison: Comparison) -> str:
    """The common-subset table: every metric with CIs, time per image / pair (+ stages), peak memory."""
    table = comparison.common
    metrics = _table_metrics(table)
    head = " | ".join(f"{m.display} [95% CI]" for m in metrics)
    lines = [
        f"| method | {head} | s / image | s / pair | stages (s / image) | peak MB | MD unit | device | weights |",
        "|---" * (len(metrics) + 8) + "|",
    ]
    for r in table.to_dict("records"):
        cells = " | ".join(_with_ci(r, m) for m in metrics)
        lines.append(
            f"| {r['label']} | {cells} | {_fmt(r['seconds_per_image'], 2)} | {_fmt(r['seconds_per_pair'], 2)} | "
            f"{_stages(r)} | {_fmt(r['peak_mem_mb'], 0)} | {_text(r['md_scale'])} | {_text(r['device'])} | "
            f"{_text(r['weights'])} |"
        )
    return "\n".join(lines) + "\n"


def per_category_markdown(comparison: Comparison) -> str:
    """One table per metric: a row per category (+ all), n samples (pairs), a "value [lo, hi]" per run."""
    cells = comparison.per_category[comparison.per_category["subset"] == "common"]
    labels = [r.label for r in comparison.runs]
    out = []
    for metric in _table_metrics(comparison.common):
        lines = [
            f"#### {metric.display} [95% CI]\n",
            f"| category | n samples (pairs) | {' | '.join(labels)} |",
            "|---" * (len(labels) + 2) + "|",
        ]
        for category, group in cells.groupby("category", sort=False):
            by_label = group.set_index("label")
            first = group.iloc[0]
            values = " | ".join(_with_ci(by_label.loc[label].to_dict(), metric) for label in labels)
            lines.append(f"| {category} | {first['n_samples']} ({first['n_pairs']}) | {values} |")
        overall = comparison.common.set_index("label")
        first = comparison.common.iloc[0]
        values = " | ".join(_with_ci(overall.loc[label].to_dict(), metric) for label in labels)
        lines.append(f"| **all** | {first['n_samples']} ({first['n_pairs']}) | {values} |")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def coverage_markdown(comparison: Comparison) -> str:
    """Per run: ok / total, and the samples it lacks (not ok, or absent) by status, listed up to MAX_LISTED."""
    samples = comparison.samples
    lines = [f"{len(samples)} sample ids across the runs; {len(comparison.common_ids)} are ok in every run.\n"]
    for run in comparison.runs:
        lacking = samples[samples[run.label] != "ok"]
        counts = ", ".join(f"{n} {status}" for status, n in lacking[run.label].value_counts().sort_index().items())
        head = f"- **{run.label}** (`{run.path}`): ok on {len(run.ok_ids)} of {len(samples)}"
        if not len(lacking):
            lines.append(f"{head}; lacks none.")
            continue
        by_category = ", ".join(
            f"{category} {n}" for category, n in lacking.groupby("category", sort=False).size().items()
        )
        listed = ", ".join(f"{i} ({s})" for i, s in lacking[["sample_id", run.label]].head(MAX_LISTED).values)
        more = f", … {len(lacking) - MAX_LISTED} more (samples.csv)" if len(lacking) > MAX_LISTED else ""
        lines.append(f"{head}; lacks {len(lacking)} ({counts}; by category: {by_category}): {listed}{more}.")
    return "\n".join(lines) + "\n"


def _pairing(runs: list[Run]) -> str:
    """Whether the CIs are paired: the same draws of the same samples need the same n_boot and seed."""
    settings = {tuple(sorted(r.aggregate.items())) for r in runs}
    if len(settings) == 1:
        return "Every run draws the same bootstrap samples (same order, n_boot and seed): the CIs are paired."
    listed = "; ".join(f"{r.label}: {r.aggregate or 'summarize defaults'}" for r in runs)
    return f"The runs' bootstrap settings differ ({listed}): their CIs are not paired."


def comparison_markdown(comparison: Comparison) -> str:
    """comparison.md: common subset, full coverage, per category, coverage notes — in that order."""
    common = comparison.common.iloc[0]
    offline = bool((comparison.common["weights"] != "real").any())
    runs = "\n".join(f"- {r.label}: `{r.path}`" for r in comparison.runs)
    parts = [
        "# Comparison\n",
        f"## Common subset: {common['n_samples']} samples ({common['n_pairs']} pairs) ok in every run\n",
        f"Runs:\n{runs}\n",
        "Every metric recomputed from results.csv / pairs.csv on these samples only, with each job's "
        f"aggregation and bootstrap (95% CI). {_pairing(comparison.runs)}\n",
        common_markdown(comparison),
        f"{TIMING_NOTE} n/a: no value (a metric that run did not measure, or undefined on its samples).\n",
        *([f"Runs with weights other than `real` are {NOT_COMPARABLE}.\n"] if offline else []),
        "## Full coverage (each run on its own samples: rows with different coverage are not comparable)\n",
        to_markdown(comparison.full),
        "## Per category (common subset)\n",
        per_category_markdown(comparison),
        "## Coverage\n",
        coverage_markdown(comparison),
    ]
    return "\n".join(parts)


# ---- figure ----------------------------------------------------------------------------------------
def plot_md_vs_if(table: pd.DataFrame, title: str = "") -> Figure:
    """Scatter of MD (x, lower is better) against IF (y, higher is better), with CI error bars both ways.

    Args:
        table: rows with label, mean_distance and image_fidelity (+ _ci_low/_ci_high), md_scale, weights.
        title: e.g. the common subset's size.
    """
    fig = Figure(figsize=(4.8, 3.8), layout="constrained")
    ax = fig.subplots()
    for r in table.itertuples():
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
            label=r.label,
        )
    units = table["md_scale"].dropna()  # one unit: compare refused mixed ones
    ax.set_xlabel(f"Mean Distance (↓, {units.iloc[0] if len(units) else 'unit unrecorded'})")
    ax.set_ylabel("Image Fidelity (↑)")
    ax.legend(fontsize=8)
    offline = bool((table["weights"] != "real").any())
    notes = [n for n in (title, NOT_COMPARABLE if offline else "") if n]
    if notes:
        ax.set_title("\n".join(notes), fontsize=8, color="darkred" if offline else "black")
    return fig


def write_comparison(comparison: Comparison, out: Path) -> str:
    """Write every output file to `out`; returns the Markdown."""
    atomic_write_csv(out / "comparison.csv", comparison.common)
    atomic_write_csv(out / "full_coverage.csv", comparison.full)
    atomic_write_csv(out / "per_category.csv", comparison.per_category)
    atomic_write_csv(out / "samples.csv", comparison.samples)
    markdown = comparison_markdown(comparison)
    atomic_write_bytes(out / "comparison.md", markdown.encode())
    common = comparison.common.iloc[0]
    title = f"common subset: {common['n_samples']} samples, {common['n_pairs']} pairs"
    save_figure(plot_md_vs_if(comparison.common, title), out / "md_vs_if")
    return markdown


def main(argv: list[str] | None = None) -> None:
    """CLI: write the comparison files to --out and print comparison.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="job dirs holding metrics.json and results.csv")
    parser.add_argument(
        "--out", type=Path, default=Path("comparison"), help="output folder (default: ./comparison)"
    )
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.run_dirs if not (d / METRICS_JSON).exists()]
    if missing:
        parser.error(f"no {METRICS_JSON} in: {', '.join(missing)} (run `python -m experiments.run` first)")
    try:
        comparison = compare(args.run_dirs)
    except (MixedScaleError, ComparisonError) as err:
        raise SystemExit(f"error: {err}") from None  # one line, exit 1
    print(write_comparison(comparison, args.out))


if __name__ == "__main__":
    main()
