"""The tiny world shared by the tests (STYLE.md "Tests and tooling").

- `cfg_offline`: the real config composed with the compose API (`preset=offline`, `logger=none`), once per
  package; `cfg_job` is a per-test copy writing into tmp_path (GlobalHydra cleared afterwards).
- `make_cfg`: compose with extra overrides (e.g. `eval=fast`, `method=knob_echo` from tests/conf).
- `tiny_samples` / `tiny_backbone`: synthetic 64x64 samples with known handles and targets, and the seeded
  SD-shaped tiny backbone (the diffusers dummy-components pattern).
- `cli`: runs `python -m experiments.run ...` in a subprocess, offline, with tests/ on PYTHONPATH.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from experiments import CONF_DIR, REPO_ROOT

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
# One intra-op thread for the whole suite (subprocesses inherit it): tiny models gain nothing from more, and
# on a loaded 2-core machine OpenMP spin-waiting made 2-thread tiny UNet calls ~15x slower (1.2 s vs 0.08 s).
# It changes only float summation order.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

TESTS_DIR = Path(__file__).resolve().parent
TEST_CONF_DIR = TESTS_DIR / "conf"  # test-only options: eval=fast, method=knob_echo
SEARCHPATH = f"hydra.searchpath=[file://{TEST_CONF_DIR}]"
N_SAMPLES = 2
# The offline preset (toy model and metrics), on the synthetic samples whose answers the tests know.
OFFLINE = ["preset=offline", "dataset=synthetic", "logger=none", SEARCHPATH, f"dataset.n={N_SAMPLES}"]


def _compose(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose("config", overrides=overrides, return_hydra_config=True)


def _point_at(cfg: DictConfig, root: Path) -> DictConfig:
    with open_dict(cfg):
        cfg.paths.output_dir = str(root / "job")
        cfg.paths.log_dir = str(root / "logs")
        cfg.paths.cache_dir = str(root / "cache")
        cfg.device = "cpu"
        cfg.aggregate.n_boot = 200
    return cfg


@pytest.fixture(scope="package")
def cfg_offline() -> DictConfig:
    """The offline config, composed once (read-only: tests use `cfg_job` / `make_cfg` copies)."""
    cfg = _compose(OFFLINE)
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture
def cfg_job(cfg_offline: DictConfig, tmp_path: Path) -> Iterator[DictConfig]:
    """A copy of `cfg_offline` whose outputs, logs and cache go to tmp_path."""
    cfg = _point_at(cfg_offline.copy(), tmp_path)
    yield cfg
    GlobalHydra.instance().clear()


@pytest.fixture
def make_cfg(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """`make_cfg("method=identity", "eval=fast", root=...)` -> an offline config writing under tmp_path."""

    def make(*overrides: str, root: Path | None = None) -> DictConfig:
        cfg = _compose([*OFFLINE, *overrides])
        GlobalHydra.instance().clear()
        return _point_at(cfg, root or tmp_path)

    yield make
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def tiny_samples() -> list:
    """Two synthetic 64x64 samples with known handles/targets (dragbench.synth)."""
    from dragbench.synth import synthetic_samples

    return synthetic_samples(N_SAMPLES, size=64, seed=0)


@pytest.fixture(scope="session")
def tiny_backbone():
    """The seeded tiny SD-1.5-shaped backbone (memoised per process)."""
    from dragbench.backbone import build_tiny

    return build_tiny(seed=0, device="cpu")


def cli_env(tmp_path: Path, *extra_pythonpath: Path) -> dict[str, str]:
    """Environment for CLI subprocesses: offline, logs/cache in tmp_path, tests/ importable."""
    paths = [*map(str, extra_pythonpath), str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "DRAGBENCH_LOGS": str(tmp_path / "logs"),
        "DRAGBENCH_CACHE_DIR": str(tmp_path / "cache"),
        "HYDRA_FULL_ERROR": "1",
    }


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run `python -m experiments.run <args>` offline; returns the CompletedProcess (output captured)."""

    def run(
        *args: str, pythonpath: tuple[Path, ...] = (), timeout: float = 300
    ) -> subprocess.CompletedProcess:
        flags = [a for a in args if a.startswith("-")]  # e.g. -m: argparse wants flags before overrides
        args = tuple(a for a in args if not a.startswith("-"))
        command = [
            sys.executable,
            "-m",
            "experiments.run",
            *flags,
            *OFFLINE,
            "device=cpu",
            "aggregate.n_boot=200",
            *args,
        ]
        return subprocess.run(
            command,
            cwd=tmp_path,
            env=cli_env(tmp_path, *pythonpath),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


__all__ = ["REPO_ROOT", "cli_env"]


@pytest.fixture
def run_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Run the real `@hydra.main` app in this process (no interpreter start-up): `run_app("-m", "k=v", ...)`.

    Hydra's own logging setup is switched off so pytest's log capture keeps working.
    """
    from experiments.run import main

    for key, value in cli_env(tmp_path).items():
        if key.startswith(("DRAGBENCH_", "HF_", "WANDB_")):
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> None:
        flags = [a for a in args if a.startswith("-")]
        overrides = [a for a in args if not a.startswith("-")]
        quiet = ["hydra/job_logging=none", "hydra/hydra_logging=none", "device=cpu", "aggregate.n_boot=200"]
        monkeypatch.setattr(sys, "argv", ["experiments.run", *flags, *OFFLINE, *quiet, *overrides])
        GlobalHydra.instance().clear()
        main()

    yield run
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None  # later in-process jobs must not see this run's hydra.* settings


@pytest.fixture
def run_on_real_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The held-out check of a method, in this process: `experiments.run model=sd15 model.pretrained=<the
    official-ref tiny SD-1.5 folder> eval=tiny dataset=dragbench dataset.root=<the real samples> <overrides>`
    into tmp_path/<name>, with a cache of its own (two runs share nothing).

    `run(name, *overrides)` returns (results.csv rows, the edited images in sample-id order).
    """
    import csv

    import numpy as np
    from PIL import Image
    from shared_data import OFFICIAL_REF, REAL_SAMPLES

    from experiments.run import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)

    def run(name: str, *overrides: str) -> tuple[list[dict], list[np.ndarray]]:
        out = tmp_path / name
        monkeypatch.setenv("DRAGBENCH_CACHE_DIR", str(out / "cache"))
        monkeypatch.setattr(
            sys,
            "argv",
            [
                "experiments.run",
                "hydra/job_logging=none",
                "hydra/hydra_logging=none",
                "logger=none",
                "device=cpu",
                "model=sd15",
                f"model.pretrained={OFFICIAL_REF / 'tiny-sd15'}",
                "eval=tiny",
                "dataset=dragbench",
                f"dataset.root={REAL_SAMPLES}",
                "aggregate.n_boot=50",
                *overrides,
                f"hydra.run.dir={out}",
            ],
        )
        GlobalHydra.instance().clear()
        main()
        rows = list(csv.DictReader((out / "results.csv").open()))
        images = [np.asarray(Image.open(p)) for p in sorted(out.glob("edits/*/*/dragged_image.png"))]
        return rows, images

    yield run
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None
