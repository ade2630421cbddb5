"""A job dir's result files, written atomically after every sample so a killed job resumes where it stopped.

Layout (DESIGN.md "Command line"): results.csv (one row per sample), pairs.csv (one row per handle/target
pair), metrics.json (aggregate), edits/<category>/<name>/dragged_image.png (the official output layout).
results.csv is the commit point: a sample counts as finished once its row is there.
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from omegaconf import OmegaConf
from PIL import Image

from eval.metrics import CORE_METRICS
from experiments.config_identity import ConfigMismatchError, config_diff, config_hash, mismatch_message

log = logging.getLogger(__name__)

RESULTS_CSV = "results.csv"
PAIRS_CSV = "pairs.csv"
METRICS_JSON = "metrics.json"
RESOLVED_CONFIG = "config_resolved.yaml"  # the config of the job's first run (never overwritten)
CONFIG_HASH_FILE = "config_hash.txt"  # its experiments.config_identity.config_hash
EDITS_DIR = "edits"
EDITED_IMAGE = "dragged_image.png"  # official DragBench output file name
DRAG_BACK_IMAGE = "drag_back_image.png"  # eval.drag_back: the edit dragged back (beside dragged_image.png)
RESULT_COLUMNS = (
    "sample_id",
    "category",
    "status",
    "error",
    *(m.sample_column for m in CORE_METRICS if m.sample_column is not None),  # mean_distance, image_fidelity
    "md_scale",  # the unit of mean_distance (eval.aggregate.md_scale): px@<width>w or pct_of_max_side
    "eval_width",
    "eval_height",
    "n_pairs",
    "seconds",
    "seconds_edit",
    "seconds_eval",
    "peak_mem_mb",
    "iterations",
)
PAIR_COLUMNS = (
    "sample_id",
    "category",
    "pair",
    "handle_x",
    "handle_y",
    "target_x",
    "target_y",
    "final_x",
    "final_y",
    # eval.metrics: matched_x, matched_y, distance (MD), gt_distance (toy world only; NaN elsewhere)
    *(column for m in CORE_METRICS for column in m.pair_columns),
)
# Opt-in metrics (eval.drag_back) add their columns after these, in results.csv and pairs.csv alike.
# Statuses after which a sample is never recomputed ("failed" is retried when retry_failed=True).
FINAL_STATUSES = ("ok", "unsupported", "skipped")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder + os.replace (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_write_csv(path: Path, frame: pd.DataFrame) -> None:
    """Atomically write a DataFrame as CSV (no index)."""
    atomic_write_bytes(path, frame.to_csv(index=False).encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    """Atomically write `obj` as indented JSON (numpy scalars and NaN allowed)."""
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=_json_default).encode())


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class ResultsStore:
    """Per-job result files with resume.

    Args:
        root: the job's output dir (Hydra's runtime output dir).
        retry_failed: recompute samples whose recorded status is "failed" when the job is re-run.
    """

    def __init__(self, root: str | Path, retry_failed: bool = True) -> None:
        self.root = Path(root)
        self.retry_failed = retry_failed
        self.root.mkdir(parents=True, exist_ok=True)
        self._rows, self._pairs = self._load()

    # ---- reading -------------------------------------------------------------------------------
    def _load(self) -> tuple[list[dict], list[dict]]:
        results_path, pairs_path = self.root / RESULTS_CSV, self.root / PAIRS_CSV
        if not results_path.exists():
            return [], []
        rows = pd.read_csv(
            results_path, keep_default_na=False, na_values=[""], dtype={"config_hash": str}
        ).to_dict("records")
        if self.retry_failed:
            rows = [row for row in rows if row["status"] in FINAL_STATUSES]
        kept = {row["sample_id"] for row in rows}
        pairs = []
        if pairs_path.exists():  # pairs of a sample whose row never landed (killed in between) are dropped
            pairs = [p for p in pd.read_csv(pairs_path).to_dict("records") if p["sample_id"] in kept]
        log.info("Resuming %s: %d finished samples kept", self.root, len(rows))
        return rows, pairs

    @property
    def finished_ids(self) -> set[str]:
        """sample_ids that are done and will not be recomputed."""
        return {row["sample_id"] for row in self._rows}

    def results(self) -> pd.DataFrame:
        """All per-sample rows so far: RESULT_COLUMNS first, then whatever else the rows carry."""
        frame = pd.DataFrame(self._rows)
        extra = [c for c in frame.columns if c not in RESULT_COLUMNS]
        return frame.reindex(columns=[*RESULT_COLUMNS, *extra])

    def pairs(self) -> pd.DataFrame:
        """All per-pair rows so far: PAIR_COLUMNS first, then whatever else they carry (opt-in metrics)."""
        frame = pd.DataFrame(self._pairs)
        extra = [c for c in frame.columns if c not in PAIR_COLUMNS]
        return frame.reindex(columns=[*PAIR_COLUMNS, *extra])

    def edited_image_path(self, sample_id: str) -> Path:
        """edits/<category>/<name>/dragged_image.png for a sample_id "<category>/<name>"."""
        return self.root / EDITS_DIR / sample_id / EDITED_IMAGE

    # ---- the job's configuration ---------------------------------------------------------------
    def bind_config(self, config: dict[str, Any]) -> str:
        """Claim this job dir for `config`, or refuse if it already holds results of another config.

        The first run writes config_resolved.yaml and config_hash.txt; a rerun whose config_hash differs
        (from either file or from a results.csv row) raises before anything in the dir is touched.

        Args:
            config: the resolved job config as plain containers.

        Returns:
            The config_hash every results row and metrics.json carry.

        Raises:
            ConfigMismatchError: one line naming the differing keys (dotted, old -> new).
        """
        text = OmegaConf.to_yaml(config)
        config = yaml.safe_load(text)  # hash what the file holds, so a reread config hashes the same
        new_hash = config_hash(config)
        config_path, hash_path = self.root / RESOLVED_CONFIG, self.root / CONFIG_HASH_FILE
        old_config = yaml.safe_load(config_path.read_text()) if config_path.exists() else None
        old_hashes = {row["config_hash"] for row in self._rows if isinstance(row.get("config_hash"), str)}
        if old_config is not None:
            old_hashes.add(config_hash(old_config))
        if hash_path.exists():
            old_hashes.add(hash_path.read_text().strip())
        stale = sorted(old_hashes - {new_hash})
        if stale:
            diff = config_diff(old_config, config) if old_config is not None else []
            raise ConfigMismatchError(mismatch_message(str(self.root), stale[0], new_hash, diff))
        if old_config is None:
            self.write_text(RESOLVED_CONFIG, text)
        self.write_text(CONFIG_HASH_FILE, new_hash + "\n")
        return new_hash

    # ---- writing -------------------------------------------------------------------------------
    def write_sample(
        self,
        row: dict,
        pairs: list[dict],
        image: np.ndarray | None,
        extra_images: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Record one finished sample: images, then pairs.csv, then its results.csv row (the commit point).

        Args:
            row: the results.csv row; must contain "sample_id" and "status".
            pairs: its pairs.csv rows (empty when the sample failed).
            image: edited uint8 (H, W, 3) image, or None (failed / unsupported).
            extra_images: {file name: uint8 image} written beside it (e.g. DRAG_BACK_IMAGE).
        """
        sample_id = row["sample_id"]
        images = {EDITED_IMAGE: image} if image is not None else {}
        for name, array in {**images, **(extra_images or {})}.items():
            buffer = io.BytesIO()
            Image.fromarray(array).save(buffer, format="PNG")
            atomic_write_bytes(self.edited_image_path(sample_id).with_name(name), buffer.getvalue())
        self._rows = [r for r in self._rows if r["sample_id"] != sample_id] + [row]
        self._pairs = [p for p in self._pairs if p["sample_id"] != sample_id] + list(pairs)
        atomic_write_csv(self.root / PAIRS_CSV, self.pairs())
        atomic_write_csv(self.root / RESULTS_CSV, self.results())

    def write_json(self, name: str, obj: Any) -> Path:
        """Atomically write `obj` to <root>/<name> as JSON; returns the path."""
        path = self.root / name
        atomic_write_json(path, obj)
        return path

    def write_text(self, name: str, text: str) -> Path:
        """Atomically write text to <root>/<name>; returns the path."""
        path = self.root / name
        atomic_write_bytes(path, text.encode())
        return path
