"""`python -m experiments.run [overrides]`: one job (or a sweep with -m) over conf/config.yaml.

compose -> instantiate dataset, method, evaluator, store, logger -> experiments.job.run_job -> metrics.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dragbench.backbone import resolve_device
from experiments import CONF_DIR, REPO_ROOT, provenance
from experiments.config_identity import ConfigMismatchError
from experiments.job import job_failure, run_job
from experiments.sweep_progress import job_progress, swept_values
from experiments.weights_preflight import check_weights

log = logging.getLogger(__name__)


def instantiate(node: DictConfig, key: str) -> Any:
    """hydra.utils.instantiate with plain-python containers, logging "Instantiating <target>".

    Raises:
        FileNotFoundError: (incl. MissingWeightsError) data or weights absent; one line naming the config key.
    """
    log.info("Instantiating <%s>", node._target_)
    try:
        return hydra.utils.instantiate(node, _convert_="all")
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, FileNotFoundError):  # one line naming the config key, not Hydra's wrapper
            raise type(cause)(f"{key}: {cause} (see `{key}.*` overrides)") from None
        raise


def resolved_config(cfg: DictConfig) -> dict:
    """The job's config with every interpolation resolved, without Hydra's own node."""
    keys = [key for key in cfg if key != "hydra"]
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)


def job_identity(cfg: DictConfig) -> dict[str, Any]:
    """Overrides, run name and sweep group of this job (empty/None outside a Hydra app, e.g. in tests)."""
    if not HydraConfig.initialized():
        return {"overrides": [], "name": cfg.get("task_name", "run"), "group": None, "multirun": False}
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    return {
        "overrides": list(hydra_cfg.overrides.task),
        "name": hydra_cfg.job.override_dirname or cfg.task_name,
        "group": f"{cfg.task_name}/{Path(hydra_cfg.sweep.dir).name}" if multirun else None,
        "multirun": multirun,
    }


def run_from_config(cfg: DictConfig) -> dict[str, Any]:
    """Build every object from `cfg` and run the job; the testable body of `main`.

    Raises:
        FileNotFoundError: data absent, or MissingWeightsError: real weights absent (one-line messages).
    """
    check_weights(cfg)  # before anything is built or written: one line naming every missing weight
    store = instantiate(cfg.store, "store")
    config = resolved_config(cfg)
    config_id = store.bind_config(config)  # refuses a job dir holding results of another config
    ident = job_identity(cfg)
    device = resolve_device(cfg.device)
    samples = instantiate(cfg.dataset, "dataset")
    method = instantiate(cfg.method, "method")
    evaluator = instantiate(cfg.eval, "eval")
    run_info = {
        **provenance.collect(REPO_ROOT, device),
        "config_hash": config_id,
        "overrides": ident["overrides"],
        "config": config,
    }
    logger = instantiate(cfg.logger, "logger") if cfg.get("logger") else None
    job_type = cfg.method._target_.rsplit(".", 1)[-1]
    session = (
        logger.session(
            run_dir=store.root,
            name=ident["name"],
            group=ident["group"],
            job_type=job_type,
            tags=list(cfg.tags),
            config=config,
            sweep=swept_values(cfg),
        )
        if logger
        else contextlib.nullcontext()
    )
    with session:
        return run_job(
            samples,
            method,
            evaluator,
            store,
            logger,
            seed=cfg.seed,
            run_info=run_info,
            n_boot=cfg.aggregate.n_boot,
            boot_seed=cfg.aggregate.seed,
            device_type=device.type,
        )


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run one job; returns Mean Distance (what a sweeper would minimise)."""
    log.info("Output dir: %s", cfg.paths.output_dir)
    try:
        with job_progress(cfg):  # sweeps: `job k/n <overrides>` log lines, a heartbeat every 30 s
            metrics = run_from_config(cfg)
    except (FileNotFoundError, ConfigMismatchError) as err:  # data/weights absent; job dir of another config
        log.error("%s", err)  # one line, no traceback (STYLE.md: fail fast with one message)
        raise SystemExit(1) from None
    except Exception:
        log.exception("Job failed (traceback also in the job log in %s)", cfg.paths.output_dir)
        raise
    failure = job_failure(metrics, cfg.paths.output_dir)
    if failure is not None and not job_identity(cfg)["multirun"]:  # in a sweep: SweepSummary exits non-zero
        log.error("%s", failure)
        raise SystemExit(1)
    return metrics["mean_distance"]


if __name__ == "__main__":
    main()
