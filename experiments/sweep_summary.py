"""A sweep's results as one table: <sweep_dir>/summary.csv, one row per job (MD, IF, ... with CIs, counts,
labels, the swept overrides and the Fig. 7 knob values), read from the job dirs' result files only.

Used by the end-of-sweep callback (experiments.sweep_callback) and by experiments.figures when a sweep dir has
no summary.csv; imports neither.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from omegaconf import DictConfig, OmegaConf

from eval.metrics import METRICS
from experiments.results_store import METRICS_JSON, RESULTS_CSV

MULTIRUN_YAML = "multirun.yaml"  # Hydra writes the sweep's composed config (sweep params unexpanded) here
SUMMARY_CSV = "summary.csv"
METRIC_COLUMNS = tuple(m.name for m in METRICS)  # eval.metrics; empty where absent (no ground truth, opt-in)
# Beside every MD / IF: how many samples it averages (n_ok) and how many it leaves out, and why.
COUNT_COLUMNS = ("n_ok", "n_failed", "n_unsupported", "n_skipped", "n_total", "n_samples", "n_pairs")
# md_scale: the unit of mean_distance (eval.aggregate.md_scale); config_hash: which config made the job.
LABEL_COLUMNS = ("md_scale", "method_weights", "eval_weights", "weights", "metric_version", "config_hash")


def _job_overrides(job_dir: Path) -> dict[str, str]:
    """The overrides of the run whose results the job dir holds: metrics.json's, else .hydra/overrides.yaml
    (Hydra rewrites the latter at the start of every run, even one the job dir then refuses)."""
    metrics_path, hydra_path = job_dir / METRICS_JSON, job_dir / ".hydra" / "overrides.yaml"
    overrides = json.loads(metrics_path.read_text()).get("overrides") if metrics_path.exists() else None
    if overrides is None and hydra_path.exists():
        overrides = yaml.safe_load(hydra_path.read_text())
    return dict(item.lstrip("+~").split("=", 1) for item in overrides or [] if "=" in item)


def _job_knobs(job_dir: Path, knobs: list[str]) -> dict[str, Any]:
    path = job_dir / "config_resolved.yaml"
    config = OmegaConf.load(path) if path.exists() else OmegaConf.create()
    return {knob.rsplit(".", 1)[-1]: OmegaConf.select(config, knob, default=None) for knob in knobs}


def _job_row(job_dir: Path, knobs: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"job": job_dir.name, "job_dir": str(job_dir), **_job_knobs(job_dir, knobs)}
    metrics_path = job_dir / METRICS_JSON
    if not metrics_path.exists():
        return {**row, "job_status": "failed"}
    metrics = json.loads(metrics_path.read_text())
    if "n_ok" not in metrics:  # metrics.json written before n_ok existed: n_samples counted the ok samples
        metrics["n_ok"] = metrics.get("n_samples")
    row["job_status"] = "all_failed" if metrics["n_ok"] == 0 and metrics.get("n_failed", 0) > 0 else "ok"
    row["method"] = str(OmegaConf.select(OmegaConf.create(metrics.get("config", {})), "method._target_"))
    for name in METRIC_COLUMNS:
        low, high = metrics.get(f"{name}_ci") or (np.nan, np.nan)
        row.update({name: metrics.get(name), f"{name}_ci_low": low, f"{name}_ci_high": high})
    row.update({name: metrics.get(name) for name in COUNT_COLUMNS + LABEL_COLUMNS})
    return row


def collect_sweep(sweep_dir: str | Path, knobs: list[str] | None = None) -> pd.DataFrame:
    """One row per job dir under `sweep_dir`: swept override values, knob values, MD, IF, CIs, n, weights.

    Args:
        sweep_dir: a multirun dir (job dirs are its sub-folders holding results.csv or .hydra/).
        knobs: dotted config keys whose resolved value becomes a column named by the last component
            (e.g. "method.lora_steps" -> "lora_steps"); missing keys give None.

    Returns:
        DataFrame sorted by job number; override columns are the keys that differ between jobs.
    """
    sweep_dir = Path(sweep_dir)
    job_dirs = sorted(
        (d for d in sweep_dir.iterdir() if (d / ".hydra").is_dir() or (d / RESULTS_CSV).exists()),
        key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name),
    )
    rows = [_job_row(d, list(knobs or [])) for d in job_dirs]
    overrides = [_job_overrides(d) for d in job_dirs]
    keys = sorted({k for o in overrides for k in o})
    swept = [k for k in keys if len({o.get(k) for o in overrides}) > 1 or len(overrides) == 1]
    for row, override in zip(rows, overrides, strict=True):
        row.update({f"override:{k}": override.get(k) for k in swept})
    return pd.DataFrame(rows)


def sweep_failure(summary: pd.DataFrame) -> str | None:
    """One line naming the jobs that failed or whose samples all failed; None when every job has results."""
    bad = summary[summary["job_status"] != "ok"] if len(summary) else summary
    if not len(bad):
        return None
    jobs = ", ".join(f"{job} ({status})" for job, status in zip(bad["job"], bad["job_status"], strict=True))
    what = f"{len(bad)} of {len(summary)} sweep jobs have no usable result"
    return f"{what}: {jobs}; see their results.csv / run.log"


def knob_defaults(config: DictConfig | dict, knobs: list[str]) -> dict[str, Any]:
    """Each knob's value in a sweep's base config (before the sweeper sets it): the default a figure marks.

    Args:
        config: the multirun's composed config (Hydra's `multirun.yaml`, or the callback's config).
        knobs: dotted keys, e.g. "method.lora_steps"; the result is keyed by the last component.

    Returns:
        {"lora_steps": 80, ...}; keys the config lacks are left out.
    """
    config = OmegaConf.create(config) if isinstance(config, dict) else config
    values = {knob.rsplit(".", 1)[-1]: OmegaConf.select(config, knob, default=None) for knob in knobs}
    return {name: value for name, value in values.items() if value is not None}


def sweep_knob_defaults(sweep_dir: str | Path, knobs: list[str]) -> dict[str, Any]:
    """knob_defaults of the sweep's <sweep_dir>/multirun.yaml; empty (nothing known) when it is missing."""
    path = Path(sweep_dir) / MULTIRUN_YAML
    return knob_defaults(OmegaConf.load(path), knobs) if path.exists() else {}
