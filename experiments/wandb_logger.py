"""Weights & Biases tracking: one run per job, offline by default (DESIGN.md "Command line", `logger=wandb`).

Keys use `/` groups (STYLE.md): `md/all`, `md/<category>`, `if/all`, `if/<category>`, `time/<stage>`.
The per-sample table (`samples`) shows the original with the drag drawn (handles -> targets, mask tinted) and
the edited image with the final points, MD, IF and status. Sweep jobs share a W&B group (the sweep) and carry
their swept values under `sweep.<key>` in the run config, so W&B's parallel coordinates need no parsing.
The table's images are staged inside the job dir (`wandb/data/`), not in the user's home, so the job dir
holds everything `wandb sync` uploads.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dragbench.sample import DragSample
from eval.metrics import CORE_METRICS, METRICS
from methods.base import EditResult

log = logging.getLogger(__name__)

# Quiet, account-free offline runs: no console spam, no git/code upload, no login prompt.
WANDB_ENV_DEFAULTS = {
    "WANDB_SILENT": "true",
    "WANDB_CONSOLE": "off",
    "WANDB_DISABLE_GIT": "true",
    "WANDB_DISABLE_CODE": "true",
    "WANDB_ERROR_REPORTING": "false",
}
METRIC_TABLE_COLUMNS = [m.sample_column for m in METRICS if m.sample_column is not None]  # eval.metrics
TABLE_COLUMNS = [
    "sample_id",
    "category",
    "status",
    "original",
    "edited",
    *(c for m in CORE_METRICS if (c := m.sample_column) is not None),  # mean_distance, image_fidelity
    "n_pairs",
    "seconds",
    "error",
]  # + the columns of opt-in metrics (Drag-Back) when a row carries them
DATA_DIR_ENV = "WANDB_DATA_DIR"  # where W&B stages artifact files (the table's images) until they are synced
JOB_DATA_DIR = "data"  # <job>/wandb/data unless the user set WANDB_DATA_DIR


def _table_columns(rows: list[dict]) -> list[str]:
    """TABLE_COLUMNS, with the opt-in metric columns some row carries inserted after the core metrics."""
    extra = [c for c in METRIC_TABLE_COLUMNS if c not in TABLE_COLUMNS and any(c in r for r in rows)]
    at = TABLE_COLUMNS.index("n_pairs")
    return [*TABLE_COLUMNS[:at], *extra, *TABLE_COLUMNS[at:]]


def weights_tag(weights: str) -> str:
    """W&B tag for a weights label: "weights:real", or "weights:random (not comparable)"."""
    return f"weights:{weights}" if weights == "real" else f"weights:{weights} (not comparable)"


@contextlib.contextmanager
def _staged_in(data_dir: Path) -> Iterator[None]:
    """W&B's data dir (artifact staging) = `data_dir` for the block, unless the user chose one."""
    if DATA_DIR_ENV in os.environ:
        yield
        return
    os.environ[DATA_DIR_ENV] = str(data_dir)
    try:
        yield
    finally:
        del os.environ[DATA_DIR_ENV]


class WandbLogger:
    """One W&B run per job.

    Args:
        project: W&B project name.
        entity: W&B entity (user/team); None = the default of the logged-in account.
        mode: "offline" (default; files under the job dir, upload later with `wandb sync`), "online" or
            "disabled".
        log_images: add the original/edited images to the per-sample table.
    """

    def __init__(
        self, project: str, entity: str | None = None, mode: str = "offline", log_images: bool = True
    ) -> None:
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode must be offline|online|disabled, got {mode!r}")
        self.project, self.entity, self.mode, self.log_images = project, entity, mode, log_images
        self.run: Any = None
        self._table_rows: list[list[Any]] = []

    @contextlib.contextmanager
    def session(
        self,
        *,
        run_dir: Path,
        name: str,
        group: str | None,
        job_type: str,
        tags: list[str],
        config: dict,
        sweep: dict[str, Any] | None = None,
    ) -> Iterator[WandbLogger]:
        """Open the run for the duration of a job; closed (with the exit code) even if the job raises.

        Args:
            run_dir: the job's output dir; W&B writes its `wandb/` folder there.
            name: run name (the job's overrides).
            group: sweep group (None for a single run).
            job_type: the method's class name.
            tags: config tags (the weights label is added when the summary is known).
            config: resolved config.
            sweep: this job's swept values (e.g. {"ablation": "lora_steps_40"}), logged as `sweep.<key>`.
        """
        import wandb  # heavy; only imported when W&B is on

        for key, value in WANDB_ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        with wandb.init(
            project=self.project,
            entity=self.entity,
            mode=self.mode,
            dir=str(run_dir),
            name=name,
            group=group,
            job_type=job_type,
            tags=tags,
            config={**config, "sweep": dict(sweep)} if sweep else config,
            reinit="create_new",
        ) as run:
            self.run = run
            log.info("W&B run %s (%s) in %s", run.id, self.mode, run_dir / "wandb")
            try:
                yield self
            finally:
                if self._table_rows:
                    columns = _table_columns(self._table_rows)
                    data = [[row.get(c) for c in columns] for row in self._table_rows]
                    with _staged_in(run_dir / "wandb" / JOB_DATA_DIR):
                        run.log({"samples": wandb.Table(columns=columns, data=data)})
                self.run, self._table_rows = None, []

    def log_sample(self, sample: DragSample, result: EditResult | None, row: dict) -> None:
        """Log one sample's metrics and add its table row."""
        import wandb

        from dragbench.visualize import draw_drag

        metrics = {
            f"sample/{k}": row[k]
            for k in (*METRIC_TABLE_COLUMNS, "seconds")
            if isinstance(row.get(k), float) and math.isfinite(row[k])
        }
        metrics.update(
            {f"time/{k[len('seconds_') :]}": v for k, v in row.items() if k.startswith("seconds_")}
        )
        self.run.log(metrics)
        original = edited = None
        if self.log_images:
            original = wandb.Image(draw_drag(sample.image, sample.mask, sample.handles, sample.targets))
            if result is not None:
                edited = wandb.Image(
                    draw_drag(result.image, None, sample.handles, sample.targets, final=result.handles)
                )
        cells = {c: row.get(c) for c in TABLE_COLUMNS}
        cells.update({c: row[c] for c in METRIC_TABLE_COLUMNS if c in row})  # opt-in metrics too
        cells.update(original=original, edited=edited, error=row.get("error", ""))
        self._table_rows.append(cells)

    def log_summary(self, metrics: dict) -> None:
        """Write `<key>/all`, `<key>/ci`, `<key>/<category>` for every declared metric in `metrics` (md, if,
        ...: eval.metrics wandb_key) and the counts to the run summary."""
        reported = [m for m in METRICS if m.name in metrics]
        summary: dict[str, Any] = {}
        for m in reported:
            summary[f"{m.wandb_key}/all"] = metrics[m.name]
            summary[f"{m.wandb_key}/ci"] = list(metrics[f"{m.name}_ci"])
        for key in (
            "n_samples",
            "n_pairs",
            "n_ok",
            "n_failed",
            "n_skipped",
            "n_unsupported",
            "n_total",
            "md_scale",
            "weights",
            "metric_version",
            "config_hash",
        ):
            summary[key] = metrics.get(key)
        for category, values in (metrics.get("per_category") or {}).items():
            summary.update({f"{m.wandb_key}/{category}": values.get(m.name) for m in reported})
        self.run.summary.update(summary)
        self.run.tags = tuple(self.run.tags or ()) + (weights_tag(str(metrics.get("weights"))),)
