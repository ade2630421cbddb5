"""Contract: every conf/dataset/*.yaml takes the same quick-run knobs, `dataset.limit` and
`dataset.categories` (categories first, then the first N), with the same errors."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException

from dragbench.drag100 import save_drag100_sample
from dragbench.synth import synthetic_samples, write_synthetic_bench
from dragbench.toy.samples import toy_samples
from experiments import CONF_DIR
from experiments.run import run_from_config

DATASETS = sorted(p.stem for p in (CONF_DIR / "dataset").glob("*.yaml"))


def _load(name: str, bench: Path, *overrides: str) -> list:
    """Compose `dataset=<name>` (DragBench / Drag100 under `bench`, generated sets with n=6), instantiate it."""
    base = [f"dataset.root={bench / name}"] if name in ("dragbench", "drag100") else ["dataset.n=6"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("config", overrides=[f"dataset={name}", *base, *overrides])
    GlobalHydra.instance().clear()
    return hydra.utils.instantiate(cfg.dataset, _convert_="all")


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    write_synthetic_bench(root / "dragbench", n=6, size=48, seed=0)
    for sample in synthetic_samples(6, size=48, seed=0):  # the same six in the Drag100 layout
        save_drag100_sample(sample, root / "drag100" / sample.name)
    return root


def test_every_dataset_is_covered():
    assert DATASETS == ["drag100", "dragbench", "synthetic", "toy", "toy_quick"]


@pytest.mark.parametrize("name", DATASETS)
def test_limit_keeps_the_first_n_samples(name, bench):
    full = _load(name, bench)
    few = _load(name, bench, "dataset.limit=2")
    assert len(full) == 6
    assert [s.sample_id for s in few] == [s.sample_id for s in full[:2]]


@pytest.mark.parametrize("name", DATASETS)
def test_categories_keep_only_those_samples_then_limit(name, bench):
    full = _load(name, bench)
    category = full[-1].category  # a category the dataset holds
    expected = [s.sample_id for s in full if s.category == category]
    kept = _load(name, bench, f"dataset.categories=[{category}]")
    assert [s.sample_id for s in kept] == expected
    one = _load(name, bench, f"dataset.categories=[{category}]", "dataset.limit=1")
    assert [s.sample_id for s in one] == expected[:1]


@pytest.mark.parametrize("name", DATASETS)
def test_unknown_category_and_bad_limit_raise(name, bench):
    with pytest.raises(InstantiationException, match="unknown category 'animal'.*Valid categories"):
        _load(name, bench, "dataset.categories=[animal]")
    with pytest.raises(InstantiationException, match="limit must be >= 1"):
        _load(name, bench, "dataset.limit=0")


def test_toy_limit_renders_only_what_it_keeps():
    assert [s.sample_id for s in toy_samples(24, limit=2)] == ["toy/scene_0000", "toy/scene_0001"]
    assert len(toy_samples(3, limit=10)) == 3


def test_synthetic_category_absent_from_the_first_n_names_the_knob():
    with pytest.raises(ValueError, match="raise dataset.n"):
        synthetic_samples(4, categories=["other_objects"])  # sample 9 is the first other_objects one
    assert [s.sample_id for s in synthetic_samples(10, categories="other_objects")] == [
        "other_objects/synthetic_0009"
    ]


def test_offline_preset_with_limit_runs_exactly_that_many_samples(make_cfg):
    """`python -m experiments.run preset=offline dataset.limit=2` (the toy world, dataset.n=4)."""
    cfg = make_cfg("dataset=toy", "dataset.n=4", "dataset.limit=2", "method=identity", "eval=fast")
    metrics = run_from_config(cfg)
    assert metrics["n_samples"] == 2
    rows = (Path(cfg.paths.output_dir) / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 2
    assert rows[1].startswith("toy/scene_0000") and rows[2].startswith("toy/scene_0001")


@pytest.mark.slow  # a fresh interpreter + Hydra + the toy model: ~25 s of CPU
def test_cli_offline_preset_with_limit_2_piped_shows_sample_progress(cli, tmp_path):
    """The issue's command through the real CLI, output captured (a pipe): 2 samples, a line for each."""
    proc = cli("preset=offline", "dataset=toy", "dataset.limit=2", "method=identity", "eval=fast")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "sample 1/2 toy/scene_0000" in out and "sample 2/2 toy/scene_0001" in out
    (results,) = (tmp_path / "logs").glob("run/runs/*/results.csv")
    assert len(results.read_text().splitlines()) == 1 + 2
