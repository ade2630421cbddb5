"""Which configuration a job dir belongs to: `config_hash` = sha256 of the canonical JSON of the resolved
config minus the keys that cannot change a result (issue 17: "a job directory belongs to one configuration").

A job dir records the hash of its first run (results store); a rerun under another hash is refused with one
line naming the differing keys (dotted paths, old -> new), so results of two configurations never mix.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Top-level config keys that cannot change any number in results.csv / metrics.json. Keep this list short and
# explicit: a key left in the hash only costs a refused resume, a key wrongly left out mixes results.
RESULT_NEUTRAL_KEYS = (
    "hydra",  # Hydra's own settings (run/sweep dirs, logging); not part of the resolved config anyway
    "logger",  # the experiment tracker (W&B project, mode, image logging): where results are *shown*
    "paths",  # roots of data/logs/cache/output: where things live, not what they are (dataset.root stays in)
    "tags",  # free-form labels
    "task_name",  # the logs/<task_name>/ folder name
    "store",  # the job dir itself and whether failed samples are retried on resume
)
# Keys dropped wherever they appear (the cache node is interpolated into method.cache and eval.cache).
RESULT_NEUTRAL_ANYWHERE = (
    "cache",  # cache location and on/off: a cached entry is bit-identical to a recomputed one (cache.py)
    "local_files_only",  # whether weights may be downloaded, not which (a missing one fails the job instead)
)
# Dotted keys that only change what is computed *once* for several jobs, not any job's numbers.
RESULT_NEUTRAL_PATHS = (
    "method.lora_plan_steps",  # snapshots trained for sibling sweep points; results bit-identical (README)
)
# Result-changing keys added after job dirs already existed: at this value (the behaviour before the key
# existed) they are left out of the hash, so those job dirs keep theirs; any other value is hashed.
ADDED_AT_DEFAULT = {
    "eval.drag_back": False,  # Drag-Back metrics (eval.metrics); true adds two metrics and a second edit
    "eval.dai": False,  # DAI (eval/dai.py), default true: a dir from before it resumes with eval.dai=false
}
MAX_LISTED_KEYS = 8  # differing keys named in the refusal message before "(+N more)"


class ConfigMismatchError(ValueError):
    """A job dir is being rerun with a configuration other than the one its results came from."""


def _prune(node: Any, path: str = "") -> Any:
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        dotted = f"{path}.{key}" if path else str(key)
        top_level_neutral = not path and key in RESULT_NEUTRAL_KEYS
        if top_level_neutral or key in RESULT_NEUTRAL_ANYWHERE or dotted in RESULT_NEUTRAL_PATHS:
            continue
        if dotted in ADDED_AT_DEFAULT and value == ADDED_AT_DEFAULT[dotted]:
            continue
        out[str(key)] = _prune(value, dotted)
    return out


def result_config(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that can change results (the RESULT_NEUTRAL_* keys removed)."""
    return _prune(config)


def config_hash(config: dict[str, Any]) -> str:
    """sha256 hex digest of the canonical JSON (sorted keys, no spaces) of `result_config(config)`.

    Args:
        config: the resolved job config as plain containers (experiments.run.resolved_config).
    """
    blob = json.dumps(result_config(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _flatten(node: Any, path: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{path}.{key}" if path else str(key)))
        return flat
    return {path: node}


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`"<dotted.key> <old> -> <new>"` for each result-relevant key that differs (sorted; absent: <unset>)."""
    flat_old, flat_new = _flatten(result_config(old)), _flatten(result_config(new))
    unset = "<unset>"
    return [
        f"{key} {flat_old.get(key, unset)} -> {flat_new.get(key, unset)}"
        for key in sorted(set(flat_old) | set(flat_new))
        if flat_old.get(key, unset) != flat_new.get(key, unset)
    ]


def mismatch_message(job_dir: str, old_hash: str, new_hash: str, diff: list[str]) -> str:
    """The one-line refusal: which job dir, which keys differ, and the two ways out."""
    listed = "; ".join(diff[:MAX_LISTED_KEYS]) + (
        f" (+{len(diff) - MAX_LISTED_KEYS} more)" if len(diff) > MAX_LISTED_KEYS else ""
    )
    what = listed or "keys unknown (no config_resolved.yaml)"
    return (
        f"{job_dir} holds results of another config (config_hash {old_hash[:12]} != {new_hash[:12]}): "
        f"{what}; rerun with the original overrides, or pick a new dir with hydra.run.dir=<dir>"
    )
