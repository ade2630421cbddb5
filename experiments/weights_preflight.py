"""Every weight a job (or a whole multirun) needs, checked before the first sample (issue 12 point 3).

The components a job builds are the `method` and `eval` nodes and every `_target_` node inside them (the SD
backbone behind `method.backbone: ${model}`). Each target lists its weight files through
`dragbench.weights.requirements_of` without loading anything; a job stops with ONE line naming what is
missing and how to get it. `WeightsPreflight` (a Hydra callback) does the same for every job of a multirun
before the first one starts; `weights_table` is `python -m dragbench weights [overrides]`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import _locate
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dragbench.backbone import MissingWeightsError
from dragbench.weights import WeightFile, format_table, missing_message, requirements_of
from experiments import CONF_DIR

log = logging.getLogger(__name__)

COMPONENTS = ("method", "eval")  # the config nodes run.py instantiates that can need weights
MAX_SWEEP_JOBS = 500  # bigger multiruns are checked job by job (composing one: ~0.5 s on 2 busy cores)

Requirement = tuple[str, WeightFile]  # (config label, e.g. "model=sd15", what it needs)


def _label(cfg: DictConfig, group: str) -> str:
    """Label `group` as "model=sd15" when Hydra recorded which option was chosen, else by its name."""
    choices = OmegaConf.select(cfg, "hydra.runtime.choices", default=None)
    if choices is None and HydraConfig.initialized():  # inside the app, `cfg` comes without its hydra node
        choices = HydraConfig.get().runtime.choices
    choice = choices.get(group) if choices is not None else None
    return f"{group}={choice}" if choice else group


def _context(cfg: DictConfig) -> dict[str, Any]:
    """Job facts a requirement may depend on: the categories the dataset is limited to (None = all)."""
    categories = OmegaConf.select(cfg, "dataset.categories", default=None)
    return {"dataset_categories": None if categories is None else list(categories)}


def _walk(cfg: DictConfig, path: str, label: str) -> Iterator[Requirement]:
    """Requirements of the `_target_` node at `path` and of every `_target_` node below it.

    A value that is exactly an interpolation of a top-level node (`backbone: ${model}`) is labelled by that
    node ("model=sd15"), so the message names the group a user overrides.
    """
    node = OmegaConf.select(cfg, path)
    if not isinstance(node, DictConfig):
        return
    if "_target_" in node:
        try:
            target = _locate(node._target_)
        except ImportError:  # not importable: instantiating it right after reports that, naming the key
            target = None
        kwargs = OmegaConf.to_container(node, resolve=True)
        for row in requirements_of(target, kwargs, _context(cfg)) if target is not None else []:
            yield label, replace(row, knob=f"{path}.{row.knob}" if row.knob else path)
    for key in node:
        child = node._get_node(key)
        raw = child._value() if child is not None else None
        if isinstance(raw, str) and raw.startswith("${") and raw.endswith("}") and raw[2:-1] in cfg:
            yield from _walk(cfg, raw[2:-1], _label(cfg, raw[2:-1]))
        elif isinstance(child, DictConfig):
            yield from _walk(cfg, f"{path}.{key}", label)


def config_requirements(cfg: DictConfig) -> list[Requirement]:
    """Every weight file the components of `cfg` need (deduplicated by file and place, first label wins)."""
    seen, rows = set(), []
    for component in COMPONENTS:
        if component not in cfg:
            continue
        for label, row in _walk(cfg, component, _label(cfg, component)):
            if (row.location, row.file) not in seen:
                seen.add((row.location, row.file))
                rows.append((label, row))
    return rows


def check_weights(cfg: DictConfig) -> None:
    """Raise unless every weight the components of `cfg` need is present or downloadable on first use.

    Raises:
        MissingWeightsError: naming each missing file, where it was looked for and how to get it.
    """
    message = missing_message(config_requirements(cfg))
    if message:
        raise MissingWeightsError(message)


def sweep_job_overrides(cfg: DictConfig) -> list[list[str]]:
    """The override list of every job a BasicSweeper multirun of `cfg` launches ([] for other sweepers)."""
    if OmegaConf.select(cfg, "hydra.sweeper._target_") != f"{BasicSweeper.__module__}.BasicSweeper":
        return []
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()]
    arguments += list(OmegaConf.to_container(cfg.hydra.overrides.task, resolve=False))
    parsed = OverridesParser.create().parse_overrides(arguments)
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [job for batch in batches for job in batch]


def check_sweep(cfg: DictConfig) -> int:
    """Compose every job of the multirun `cfg` and check all their weights at once; returns the job count.

    Raises:
        MissingWeightsError: one line for all jobs (each missing file named once).
    """
    jobs = sweep_job_overrides(cfg)
    if not jobs or len(jobs) > MAX_SWEEP_JOBS:
        check_weights(cfg)  # other sweepers / huge sweeps: every job still checks itself before its samples
        return len(jobs)
    config_name = OmegaConf.select(cfg, "hydra.job.config_name") or "config"
    hydra_overrides = list(OmegaConf.to_container(cfg.hydra.overrides.hydra, resolve=False))  # searchpath...
    rows: dict[tuple[str, str], Requirement] = {}
    for overrides in dict.fromkeys(tuple(job) for job in jobs):  # distinct jobs, in launch order
        job_cfg = compose(config_name, overrides=[*hydra_overrides, *overrides], return_hydra_config=True)
        for label, row in config_requirements(job_cfg):
            rows.setdefault((row.location, row.file), (label, row))
    message = missing_message(rows.values())
    if message:
        raise MissingWeightsError(f"{message} (checked all {len(jobs)} jobs before launching any)")
    return len(jobs)


class WeightsPreflight(Callback):
    """Hydra callback: before a multirun launches its first job, check the weights of every job it will run.

    On a missing weight it prints ONE line to stderr and exits 1 (no job is launched, no traceback).
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            n_jobs = check_sweep(config)
        except MissingWeightsError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(1) from None
        log.info("Weights preflight: every weight of the %d jobs is present or downloadable", n_jobs)


WEIGHT_GROUPS = ("model", "method", "eval")  # config groups whose options can need weights (`--all`)


def weights_table(overrides: Sequence[str], every_option: bool = False) -> tuple[list[str], bool]:
    """Table lines of what the config composed from `overrides` needs, and whether it can all run now.

    Args:
        overrides: Hydra overrides, as for `python -m experiments.run` (e.g. ["method=draggan"]); a sweep
            ("method=draggan,dragdiffusion") lists what every job of it needs.
        every_option: also compose each option of `WEIGHT_GROUPS` (conf/<group>/*.yaml) on top of them.

    Returns:
        (the table plus a last line naming what is missing or saying all is there, nothing missing).
    """
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    variants = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]  # a,b sweeps
    if every_option:
        options = [(g, p.stem) for g in WEIGHT_GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]
        variants += [[*job, f"{group}={option}"] for job in variants[:1] for group, option in options]
    rows: dict[tuple[str, str], Requirement] = {}
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        for variant in variants:
            cfg = compose("config", overrides=variant, return_hydra_config=True)
            for label, row in config_requirements(cfg):
                rows.setdefault((row.location, row.file), (label, row))
    GlobalHydra.instance().clear()
    if not rows:
        return ["this configuration needs no weight files (tiny, random or committed toy weights)"], True
    message = missing_message(rows.values())
    last = message or "all weights present (or downloaded on first use)"
    return [*format_table(rows.values()), last], not message
