"""Where a job stands in its sweep, for progress lines: `job 3/14 ablation=lora_steps_40` (+ rate, ETA).

Hydra gives a job its number (`hydra.job.num`, 0-based) but not the sweep's length; the basic sweeper saves
the sweep's config (its `hydra.sweeper.params` and the command-line overrides) to `<sweep_dir>/multirun.yaml`
when the sweep starts, and the length is recomputed from it exactly as the sweeper expands it. The file's
time is the sweep's start, for the ETA over jobs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dragbench import progress

log = logging.getLogger(__name__)

MULTIRUN_YAML = "multirun.yaml"  # written by Hydra's BasicSweeper into the sweep dir


def _sweep(multirun_yaml: Path) -> tuple[int, list[str]] | None:
    """(number of jobs, swept keys) of a basic-sweeper multirun from its saved config; None if unknown."""
    if not multirun_yaml.is_file():
        return None
    saved = OmegaConf.load(multirun_yaml)
    if "BasicSweeper" not in str(OmegaConf.select(saved, "hydra.sweeper._target_")):
        return None  # other sweepers (optuna, ...) choose their jobs as they go
    params = OmegaConf.select(saved, "hydra.sweeper.params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(OmegaConf.select(saved, "hydra.overrides.task") or [])
    try:
        overrides = OverridesParser.create().parse_overrides(arguments)
        batches = BasicSweeper.split_arguments(overrides, None)
    except HydraException as err:  # a sweep the basic sweeper rejects: it failed before any job ran
        log.warning("sweep length unknown (%s)", err)
        return None
    swept = {o.get_key_element() for o in overrides if o.is_sweep_override()}
    return sum(len(batch) for batch in batches), sorted(swept)


def sweep_length(multirun_yaml: str | Path) -> int | None:
    """Number of jobs of a basic-sweeper multirun, from its saved config.

    Args:
        multirun_yaml: `<sweep_dir>/multirun.yaml`.

    Returns:
        How many jobs the basic sweeper makes of its params and the command line (the command line wins
        over `hydra.sweeper.params`, as in Hydra); None for another sweeper or a missing file.
    """
    sweep = _sweep(Path(multirun_yaml))
    return sweep[0] if sweep is not None else None


def job_label(job_overrides: list[str], swept: list[str]) -> str:
    """The job's values of the swept keys, e.g. "ablation=lora_steps_40" (all its overrides if none match)."""
    chosen = [o for o in job_overrides if o.split("=", 1)[0].lstrip("+~") in swept]
    return ",".join(chosen or job_overrides)


def swept_values(cfg: DictConfig) -> dict[str, Any]:
    """This job's value of every swept key, typed as YAML reads it: {"ablation": "lora_steps_40"}, {} outside
    a multirun. W&B puts it in the run config (`sweep.<key>`), so its parallel coordinates need no parsing.
    """
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {}
    hydra_cfg = HydraConfig.get()
    _, swept = _sweep(Path(hydra_cfg.sweep.dir) / MULTIRUN_YAML) or (None, [])
    values = {}
    for override in hydra_cfg.overrides.task:
        key, _, value = override.partition("=")
        if key.lstrip("+~") in swept:
            values[key.lstrip("+~")] = yaml.safe_load(value)
    return values


@contextlib.contextmanager
def job_progress(cfg: DictConfig) -> Iterator[None]:
    """In a multirun: progress as log lines (no bars inside sweep jobs) under a `job k/n <overrides>` stage.

    Outside a Hydra multirun this does nothing (a single run keeps the process's progress mode).
    """
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        yield
        return
    hydra_cfg = HydraConfig.get()
    multirun_yaml = Path(hydra_cfg.sweep.dir) / MULTIRUN_YAML
    since = multirun_yaml.stat().st_mtime if multirun_yaml.is_file() else None
    total, swept = _sweep(multirun_yaml) or (None, [])
    label = job_label(list(hydra_cfg.overrides.task), swept) or cfg.task_name
    progress.set_mode("log")
    with progress.stage("job", label, position=int(hydra_cfg.job.num), total=total, since=since):
        yield
