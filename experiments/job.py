"""One job = edit and score every sample of a dataset with one method, writing results as it goes.

DESIGN.md "The data flow of one job". Takes built objects (no Hydra here), so tests call it directly.
A failing sample becomes a `status=failed` row (traceback in the job log) and the job goes on; samples
already finished in the job dir are skipped (STYLE.md "Errors, results, cache").
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from dragbench.progress import track
from dragbench.sample import DragSample, InvalidSampleError
from dragbench.validation import check_points_inside
from eval.aggregate import summarize
from eval.metrics import CORE_METRICS, METRICS
from experiments.results_store import DRAG_BACK_IMAGE, METRICS_JSON, RESULTS_CSV, ResultsStore
from methods.base import DragMethod, EditResult, peak_memory_mb

log = logging.getLogger(__name__)

STAGE_PREFIX = "time/"  # info "time/<stage>" -> column "seconds_<stage>"; other scalars -> "info/<key>"
MB = 2**20


class JobLogger(Protocol):
    """What the job tells an experiment tracker (experiments/wandb_logger.py implements it)."""

    def log_sample(self, sample: DragSample, result: EditResult | None, row: dict) -> None: ...

    def log_summary(self, metrics: dict) -> None: ...


@dataclass
class SampleOutcome:
    """One processed sample: its results.csv row, pairs.csv rows, edited image (None unless ok) and, with
    eval.drag_back, the back-dragged image."""

    row: dict[str, Any]
    pairs: list[dict[str, Any]] = field(default_factory=list)
    result: EditResult | None = None
    dragged_back: np.ndarray | None = None


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; called before every sample so order and resuming don't matter."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def method_weights(method: DragMethod) -> str:
    """Weights label of a method: its `weights` attribute, else its backbone's, else "none"."""
    label = getattr(method, "weights", None)
    if label is None:
        label = getattr(getattr(method, "backbone", None), "weights", None)
    return str(label) if label is not None else "none"


def combined_weights(*labels: str) -> str:
    """ "real" when every model involved has real weights (or there is none); else the other labels."""
    other = sorted({label for label in labels if label not in ("real", "none")})
    return "+".join(other) if other else "real"


def check_sample(sample: DragSample) -> None:
    """Raise InvalidSampleError unless the sample's image, mask and points are usable (finite, inside)."""
    image, mask = np.asarray(sample.image), np.asarray(sample.mask)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InvalidSampleError(
            f"{sample.sample_id}: image must be uint8 (H, W, 3), got {image.dtype} {image.shape}"
        )
    if mask.shape != image.shape[:2]:
        raise InvalidSampleError(
            f"{sample.sample_id}: mask {mask.shape} does not match image {image.shape[:2]}"
        )
    points = np.concatenate([np.asarray(sample.handles, float), np.asarray(sample.targets, float)])
    if np.shape(sample.handles) != np.shape(sample.targets) or not np.isfinite(points).all():
        raise InvalidSampleError(
            f"{sample.sample_id}: handles/targets must be finite (N, 2) arrays of equal shape"
        )
    check_points_inside(sample.handles, sample.targets, sample.width, sample.height, sample.sample_id)


def check_result(sample: DragSample, result: EditResult) -> None:
    """Raise ValueError unless `result` is a well-formed EditResult for `sample`."""
    if result.status not in ("ok", "unsupported"):
        raise ValueError(f"EditResult.status must be 'ok' or 'unsupported', got {result.status!r}")
    if result.status == "unsupported":
        return
    image = np.asarray(result.image)
    if image.dtype != np.uint8 or image.shape != sample.image.shape:
        raise ValueError(f"edited image must be uint8 {sample.image.shape}, got {image.dtype} {image.shape}")
    if result.handles is not None and np.shape(result.handles) != np.shape(sample.handles):
        raise ValueError(f"final handles must be {np.shape(sample.handles)}, got {np.shape(result.handles)}")


def _peak_mem_mb(info: dict, device_type: str) -> float:
    """The method's own `peak_mem_mb` (methods.base.REQUIRED_INFO), else the same definition measured here."""
    if "peak_mem_mb" in info:
        return float(info["peak_mem_mb"])
    return peak_memory_mb(device_type)


def info_columns(info: dict[str, Any]) -> dict[str, Any]:
    """results.csv columns from EditResult.info: "time/<stage>" -> "seconds_<stage>", "iterations", and
    every other scalar as "info/<key>"."""
    columns: dict[str, Any] = {"iterations": info.get("iterations")}
    for key, value in info.items():
        if key.startswith(STAGE_PREFIX):
            columns[f"seconds_{key[len(STAGE_PREFIX) :]}"] = value
        elif key != "iterations" and isinstance(value, (bool, int, float, str)):
            columns[f"info/{key}"] = value
    return columns


def _pair_rows(sample: DragSample, result: EditResult, score: Any) -> list[dict]:
    """pairs.csv rows: eval.score's pair rows (points, every per-pair metric) + the method's final point."""
    final = result.handles if result.handles is not None else np.full_like(sample.handles, np.nan)
    rows = score.pair_rows(sample)
    return [dict(row, final_x=final[k, 0], final_y=final[k, 1]) for k, row in enumerate(rows)]


def drag_back_sample(sample: DragSample, edited: np.ndarray) -> DragSample:
    """The Drag-Back edit's input (DragLoRA): the edited image with handles and targets swapped.

    The sample id stays; every per-image cache (LoRA, inversion, DIFT features) keys on image content, so
    this edit never reuses the forward edit's entries.
    """
    swapped = dict(handles=sample.targets.copy(), targets=sample.handles.copy())
    return replace(sample, image=np.asarray(edited), **swapped)


def _drag_back(sample: DragSample, edited: np.ndarray, method: DragMethod, seed: int) -> np.ndarray:
    """Edit `edited` back with the same method (seeded like the forward edit); the back-dragged image."""
    back_sample = drag_back_sample(sample, edited)
    seed_everything(seed)
    back = method.edit(back_sample)
    if back.status != "ok":
        raise ValueError(f"Drag-Back: the method answered {back.status!r} on its edit of {sample.sample_id}")
    check_result(back_sample, back)
    return np.asarray(back.image)


def process_sample(
    sample: DragSample, method: DragMethod, evaluator: Any, seed: int, device_type: str = "cpu"
) -> SampleOutcome:
    """Edit and score one sample; any exception becomes a failed row (never propagates).

    Args:
        sample: the sample.
        method: anything with `edit(sample) -> EditResult`.
        evaluator: `eval.Evaluator` (`sample_row`, `score(sample, edited, dragged_back=) -> SampleScore`);
            with `drag_back` true the result is edited back with handles and targets swapped first.
        seed: set before the edit, and again before the Drag-Back edit (protocol §2: seed 42 before every sample).
        device_type: "cuda" to measure peak GPU memory, else process peak RSS is recorded.

    Returns:
        The sample's outcome; `row["status"]` is ok | failed | skipped | unsupported.
    """
    row: dict[str, Any] = evaluator.sample_row(sample)  # the columns eval.score's rows start with too
    if sample.n_pairs == 0:
        return SampleOutcome({**row, "status": "skipped", "error": "no handle/target pairs", "seconds": 0.0})
    seed_everything(seed)
    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        check_sample(sample)
        result = method.edit(sample)
        check_result(sample, result)
        edit_done = time.perf_counter()
        row.update(info_columns(result.info), peak_mem_mb=_peak_mem_mb(result.info, device_type))
        if result.status == "unsupported":
            row.update(
                status="unsupported", error=str(result.info.get("reason", "")), seconds=edit_done - start
            )
            return SampleOutcome(row, result=None)
        back = None
        if getattr(evaluator, "drag_back", False):  # eval.drag_back: edit the result back, then score both
            back = _drag_back(sample, result.image, method, seed)
            row["seconds_drag_back"] = time.perf_counter() - edit_done
        eval_start = time.perf_counter()
        score = evaluator.score(sample, result.image, dragged_back=back, regenerated_box=result.regenerated_box)
        score.check_finite(sample.sample_id)
        row.update(
            **score.sample_columns(),  # one column per declared metric (eval.metrics)
            seconds=time.perf_counter() - start,
            seconds_edit=edit_done - start,
            seconds_eval=time.perf_counter() - eval_start,
        )
        return SampleOutcome(row, _pair_rows(sample, result, score), result, back)
    except Exception as err:  # a bad sample must not stop the job: record it and go on (STYLE.md)
        log.exception("Sample %s failed", sample.sample_id)
        if device_type == "cuda":
            torch.cuda.empty_cache()
        row.update(status="failed", error=f"{type(err).__name__}: {err}", seconds=time.perf_counter() - start)
        return SampleOutcome(row)


def job_failure(metrics: dict[str, Any], job_dir: str | Path) -> str | None:
    """One line when no sample of the job succeeded and at least one failed (the job must exit non-zero)."""
    if metrics["n_ok"] > 0 or metrics["n_failed"] == 0:
        return None
    counts = f"{metrics['n_failed']} failed, 0 ok, {metrics['n_unsupported']} unsupported"
    where = Path(job_dir) / RESULTS_CSV
    return f"every sample failed ({counts}): MD/IF undefined; see the error column of {where}"


def run_job(
    samples: list[DragSample],
    method: DragMethod,
    evaluator: Any,
    store: ResultsStore,
    logger: JobLogger | None = None,
    *,
    seed: int = 42,
    run_info: dict[str, Any] | None = None,
    n_boot: int = 1000,
    boot_seed: int = 42,
    progress: bool = True,
    device_type: str = "cpu",
) -> dict[str, Any]:
    """Edit, score and record every sample not yet finished in `store`, then write metrics.json.

    Args:
        samples: the dataset.
        method: the editing method.
        evaluator: `eval.Evaluator`, with `.weights` and `.metric_version`.
        store: the job dir; finished samples in it are skipped.
        logger: optional tracker (W&B), told about every sample and the summary.
        seed: seeded before every sample.
        run_info: constant columns added to every row and to metrics.json (provenance, overrides, ...).
        n_boot: bootstrap resamples for the CIs (eval.aggregate.summarize).
        boot_seed: seed of the bootstrap.
        progress: report `sample k/n <id>` with rate and ETA (dragbench.progress: a bar on a terminal, log
            lines when piped or inside a sweep); False = silent.
        device_type: "cuda" or "cpu" (how peak memory is measured).

    Returns:
        The metrics dict also written to metrics.json.
    """
    weights = {"method_weights": method_weights(method), "eval_weights": str(evaluator.weights)}
    weights["weights"] = combined_weights(weights["method_weights"], weights["eval_weights"])
    constant = {"seed": seed, **weights, "metric_version": evaluator.metric_version, **(run_info or {})}
    row_constant = {k: v for k, v in constant.items() if not isinstance(v, (dict, list))}
    shown_metrics = [m for m in getattr(evaluator, "metrics", CORE_METRICS) if m.sample_column is not None]
    done = store.finished_ids
    todo = [s for s in samples if s.sample_id not in done]
    log.info(
        "%d samples: %d already finished in %s, %d to run",
        len(samples),
        len(samples) - len(todo),
        store.root,
        len(todo),
    )
    shown = track(
        todo,
        "sample",
        unit="sample",
        label=lambda s: s.sample_id,
        initial=len(samples) - len(todo),
        min_interval=0,  # a line as each sample starts
        mode=None if progress else "off",
    )
    for sample in shown:
        outcome = process_sample(sample, method, evaluator, seed, device_type)
        outcome.row.update(row_constant, finished_at=time.time())
        image = outcome.result.image if outcome.result is not None else None
        extra = {DRAG_BACK_IMAGE: outcome.dragged_back} if outcome.dragged_back is not None else None
        store.write_sample(outcome.row, outcome.pairs, image, extra)
        values = " ".join(f"{m.label}={outcome.row.get(m.sample_column)}" for m in shown_metrics)
        status, seconds = outcome.row["status"], outcome.row["seconds"]
        log.info("%s: %s %s (%.1f s)", sample.sample_id, status, values, seconds)
        if logger is not None:
            logger.log_sample(sample, outcome.result, outcome.row)
    ids = {s.sample_id for s in samples}  # aggregate over this dataset only
    results, pairs = store.results(), store.pairs()
    results, pairs = results[results["sample_id"].isin(ids)], pairs[pairs["sample_id"].isin(ids)]
    active = getattr(evaluator, "metrics", None)  # eval.Evaluator.metrics: the declared metrics it measures
    summary = summarize(results, pairs, n_boot=n_boot, seed=boot_seed, metrics=active)
    metrics = {**summary, **constant}
    store.write_json(METRICS_JSON, metrics)
    log.info(
        "%s  (%d ok, %d failed, %d unsupported; MD in %s) -> %s",
        "  ".join(f"{m.label} {metrics[m.name]:.{m.digits}f}" for m in METRICS if m.name in metrics),
        metrics["n_ok"],
        metrics["n_failed"],
        metrics["n_unsupported"],
        metrics.get("md_scale"),
        store.root / METRICS_JSON,
    )
    if logger is not None:
        logger.log_summary(metrics)
    return metrics
