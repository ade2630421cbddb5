"""Checks and the stage table of the real-path rehearsal (benchmarks/rehearse.py), read from job dirs.

A job that ran must have every sample `ok` with finite MD and IF, scored by the official evaluator (its rows
and metrics.json say `eval_weights=real`) with a real-weights method. The job without DragGAN checkpoints must
exit non-zero before its first sample (no results row, no edited image) with one line naming the missing file
and no traceback. Stage times and peak memory come from results.csv (`seconds_<stage>`, `peak_mem_mb`).
"""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmarks.rehearse_weights import DRAGGAN_PICKLES
from experiments.results_store import EDITS_DIR, METRICS_JSON, RESULTS_CSV

# Official DragDiffusion on one A100 at the paper defaults (issue 12 / the DragDiffusion paper's cost notes).
ANCHORS = {
    ("dragdiffusion", "lora"): "17–25 s",
    ("dragdiffusion", "drag"): "7–30 s",
    ("dragdiffusion", "peak"): "12–14 GB",
}
# Stage columns written by the methods ("time/<stage>" -> "seconds_<stage>"), in execution order.
STAGE_ORDER = (
    "lora", "encode", "inversion", "pti", "warp", "drag", "drag_denoise", "denoise", "decode", "edit", "eval",
)  # fmt: skip
NOT_STAGES = ("seconds",)  # the whole sample (edit + eval) is listed as "sample"


@dataclass
class JobCheck:
    """Outcome of one rehearsal job: passed, a one-line summary, its results (None when it made none)."""

    name: str
    passed: bool
    summary: str
    job_dir: Path
    wall: float
    results: pd.DataFrame | None = None
    problems: list[str] = field(default_factory=list)


def _read_results(job_dir: Path) -> pd.DataFrame | None:
    path = job_dir / RESULTS_CSV
    return pd.read_csv(path) if path.is_file() else None


def check_job(name: str, job_dir: Path, returncode: int, wall: float) -> JobCheck:
    """A job expected to succeed: exit 0, every sample ok, finite MD / IF, real weights on both sides."""
    results, problems = _read_results(job_dir), []
    if returncode != 0:
        problems.append(f"exit status {returncode}")
    if results is None or results.empty:
        problems.append(f"no rows in {job_dir / RESULTS_CSV}")
        return JobCheck(name, False, "; ".join(problems), job_dir, wall, None, problems)
    bad = results[results["status"] != "ok"]
    for _, row in bad.iterrows():
        problems.append(f"{row['sample_id']}: {row['status']} ({row.get('error')})")
    for column in ("mean_distance", "image_fidelity"):
        values = pd.to_numeric(results[column], errors="coerce")
        if not values.map(math.isfinite).all():
            problems.append(f"{column} not finite: {values.tolist()}")
    for column in ("eval_weights", "method_weights"):
        labels = set(results[column].astype(str)) if column in results else {"(missing column)"}
        if labels != {"real"}:
            problems.append(f"{column} = {sorted(labels)}, expected real")
    metrics_path = job_dir / METRICS_JSON
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    if metrics.get("eval_weights") != "real":
        problems.append(f"metrics.json eval_weights = {metrics.get('eval_weights')!r}, expected 'real'")
    md, fid = metrics.get("mean_distance", math.nan), metrics.get("image_fidelity", math.nan)
    summary = (
        f"{len(results)} samples, {int((results['status'] == 'ok').sum())} ok, MD {md:.2f}, IF {fid:.4f}, "
        f"eval weights {metrics.get('eval_weights')}, {wall:.0f} s"
    )
    if problems:
        summary += " — " + "; ".join(problems)
    return JobCheck(name, not problems, summary, job_dir, wall, results, problems)


def check_missing_checkpoints(
    name: str, job_dir: Path, proc: subprocess.CompletedProcess, wall: float
) -> JobCheck:
    """Without DragGAN pickles: non-zero exit before any sample, one line naming them, no traceback."""
    output = proc.stdout + proc.stderr
    problems = []
    if proc.returncode == 0:
        problems.append("exit status 0")
    if "Traceback" in output:
        problems.append("a traceback was printed")
    results = _read_results(job_dir)
    if results is not None and not results.empty:
        problems.append(f"{len(results)} sample rows written: {sorted(set(results['status']))}")
    if (job_dir / EDITS_DIR).exists():
        problems.append("edited images written")
    naming = [line for line in output.splitlines() if any(p in line for p in DRAGGAN_PICKLES)]
    if len(naming) != 1:
        problems.append(f"{len(naming)} output lines name the missing pickles (expected 1)")
    line = naming[0].strip() if naming else "(none)"
    summary = f"exit {proc.returncode} after {wall:.0f} s: {line[:300]}"
    if problems:
        summary += " — " + "; ".join(problems)
    return JobCheck(name, not problems, summary, job_dir, wall, results, problems)


def _precision(results: pd.DataFrame) -> str:
    for column in ("info/precision", "info/mixed_precision"):
        if column in results:
            values = sorted(set(results[column].dropna().astype(str)))
            label = column.split("/", 1)[1]
            return ",".join(values) if label == "precision" else f"{label}={','.join(values)}"
    return "fp32"  # a method that records no precision runs in the model's float32


def _method(job_name: str) -> str:
    """ "dragdiffusion_fp32" -> "dragdiffusion" (the key of ANCHORS)."""
    return job_name.split("_", 1)[0]


def _stages(results: pd.DataFrame) -> list[str]:
    found = [c[len("seconds_") :] for c in results.columns if c.startswith("seconds_")]
    return sorted(found, key=lambda s: STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER))


def stage_table(checks: list[JobCheck], quick: bool) -> str:
    """Markdown table: method | stage | seconds (mean of ok samples) | peak memory | precision | anchor."""
    lines = [
        "| method | stage | seconds | peak memory | precision | official code, A100, paper defaults |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for check in checks:
        results = check.results
        if results is None or results.empty:
            continue
        ok = results[results["status"] == "ok"]
        if ok.empty:
            continue
        device = str(ok["device"].iloc[0]) if "device" in ok else "?"
        peak = float(pd.to_numeric(ok["peak_mem_mb"], errors="coerce").max())
        peak_text = f"{peak / 1024:.1f} GB ({'GPU' if 'cuda' in device.lower() else 'CPU RSS'})"
        precision = _precision(ok)
        for stage in [*_stages(ok), "sample"]:
            column = "seconds" if stage == "sample" else f"seconds_{stage}"
            seconds = float(pd.to_numeric(ok[column], errors="coerce").mean())
            anchor = ANCHORS.get((_method(check.name), stage), "")
            lines.append(f"| {check.name} | {stage} | {seconds:.1f} | | {precision} | {anchor} |")
        lines.append(
            f"| {check.name} | peak memory | | {peak_text} | {precision} | "
            f"{ANCHORS.get((_method(check.name), 'peak'), '')} |"
        )
    mode = "--quick (reduced steps: not comparable to the anchors)" if quick else "paper defaults"
    device = next(
        (
            str(c.results["device"].iloc[0])
            for c in checks
            if c.results is not None and not c.results.empty and "device" in c.results
        ),
        "?",
    )
    return "\n".join([f"Rehearsal, {mode}; device: {device}", *lines])
