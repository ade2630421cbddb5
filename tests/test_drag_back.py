"""Drag-Back (DragLoRA) as a declared metric: the job edits each result back with handles and targets swapped
and scores the back-dragged image against the original (eval.drag_back=true)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from harness_fakes import PixelFidelity
from PIL import Image

from dragbench.sample import DragSample
from eval.evaluator import Evaluator
from eval.lpips_fidelity import build_fidelity
from eval.metrics import DRAG_BACK_DISTANCE, DRAG_BACK_FIDELITY, METRICS, active_metrics
from eval.patch_featurizer import PatchFeaturizer
from experiments.config_identity import config_hash
from experiments.job import drag_back_sample, run_job
from experiments.results_store import ResultsStore
from experiments.run import resolved_config, run_from_config
from methods.base import EditResult


class ShiftRight:
    """Rolls the image `pixels` to the right whatever the drag (so a drag back rolls it further)."""

    weights = "none"

    def __init__(self, pixels: int) -> None:
        self.pixels = pixels

    def edit(self, sample: DragSample) -> EditResult:
        image = np.roll(sample.image, self.pixels, axis=1)
        return EditResult(image=image, handles=sample.handles + [self.pixels, 0.0], info={"iterations": 1})


def test_drag_back_is_declared_once_and_opt_in():
    core = ["mean_distance", "image_fidelity", "image_fidelity_unpasted", "gt_distance"]
    assert [m.name for m in active_metrics()] == core
    on = active_metrics(drag_back=True)
    assert on[-2:] == (DRAG_BACK_FIDELITY, DRAG_BACK_DISTANCE)
    assert (DRAG_BACK_FIDELITY.per, DRAG_BACK_FIDELITY.higher_is_better) == ("sample", True)
    assert (DRAG_BACK_DISTANCE.per, DRAG_BACK_DISTANCE.higher_is_better) == ("pair", False)
    assert len({m.name for m in METRICS}) == len(METRICS)
    with pytest.raises(ValueError, match="unknown metric flags"):
        active_metrics(drag_bak=True)


def test_identity_drag_back_is_exact_in_the_job_dir(make_cfg, tiny_samples):
    cfg = make_cfg("method=identity", "eval=fast", "eval.drag_back=true")
    metrics = run_from_config(cfg)
    job = cfg.paths.output_dir
    # identity: the back-dragged image is the original, bit for bit
    assert metrics["drag_back_fidelity"] == 1.0 and metrics["drag_back_fidelity_ci"] == [1.0, 1.0]
    assert metrics["drag_back_distance"] == 0.0 and metrics["drag_back_distance_ci"] == [0.0, 0.0]
    assert metrics["per_category"][tiny_samples[0].category]["drag_back_fidelity"] == 1.0
    results, pairs = pd.read_csv(f"{job}/results.csv"), pd.read_csv(f"{job}/pairs.csv")
    assert (results["drag_back_fidelity"] == 1.0).all() and (results["drag_back_distance"] == 0.0).all()
    assert (pairs["drag_back_distance"] == 0.0).all() and len(pairs) == metrics["n_pairs"]
    assert (results["seconds_drag_back"] >= 0).all()
    for sample in tiny_samples:  # the back-dragged image sits beside the edit (the original, for identity)
        back = np.asarray(Image.open(f"{job}/edits/{sample.sample_id}/drag_back_image.png"))
        np.testing.assert_array_equal(back, sample.image)
    on_disk = json.loads(open(f"{job}/metrics.json").read())
    assert on_disk["drag_back_fidelity"] == 1.0 and on_disk["drag_back_distance_ci"] == [0.0, 0.0]


def test_identity_drag_back_fidelity_is_exactly_one_with_lpips(tiny_samples):
    """The IF protocol (1 − LPIPS, here with the seeded random AlexNet trunk) of an unchanged image is 1."""
    sample = tiny_samples[0]
    evaluator = Evaluator(PatchFeaturizer(radius=2), build_fidelity("random", 0, "cpu"), drag_back=True)
    score = evaluator.score(sample, sample.image.copy(), dragged_back=sample.image.copy())
    assert score.sample_columns()["drag_back_fidelity"] == 1.0
    assert score.sample_columns()["drag_back_distance"] == 0.0


def test_drag_back_swaps_handles_and_targets_and_measures_the_round_trip(tmp_path, tiny_samples):
    """A method that always rolls right by 3 px rolls by 6 px over the round trip: each handle's feature is
    found 6 px right of the handle (exact patch features), so drag_back_distance = 6."""
    back = drag_back_sample(tiny_samples[0], tiny_samples[1].image)
    np.testing.assert_array_equal(back.handles, tiny_samples[0].targets)
    np.testing.assert_array_equal(back.targets, tiny_samples[0].handles)
    assert back.image is not tiny_samples[0].image and back.sample_id == tiny_samples[0].sample_id
    evaluator = Evaluator(PatchFeaturizer(radius=2), PixelFidelity(), drag_back=True)
    metrics = run_job(tiny_samples, ShiftRight(3), evaluator, ResultsStore(tmp_path), progress=False)
    assert metrics["n_ok"] == 2
    assert metrics["drag_back_distance"] == pytest.approx(6.0, abs=1e-9)
    lo, hi = metrics["drag_back_distance_ci"]
    assert lo == pytest.approx(6.0) and hi == pytest.approx(6.0)
    rolled = [np.abs(s.image.astype(float) - np.roll(s.image, 6, axis=1)).mean() / 255 for s in tiny_samples]
    assert metrics["drag_back_fidelity"] == pytest.approx(1.0 - np.mean(rolled), abs=1e-12)


def test_drag_back_without_the_back_image_is_an_error(tiny_samples):
    evaluator = Evaluator(PatchFeaturizer(radius=2), PixelFidelity(), drag_back=True)
    with pytest.raises(ValueError, match="eval.drag_back=true"):
        evaluator.score(tiny_samples[0], tiny_samples[0].image)


def test_drag_back_changes_config_hash_only_when_on(make_cfg):
    off, on = make_cfg("method=identity"), make_cfg("method=identity", "eval.drag_back=true")
    config_off = resolved_config(off)
    assert config_off["eval"]["drag_back"] is False
    before_the_key = {**config_off, "eval": {k: v for k, v in config_off["eval"].items() if k != "drag_back"}}
    assert config_hash(config_off) == config_hash(before_the_key)  # job dirs written before it keep theirs
    assert config_hash(resolved_config(on)) != config_hash(config_off)


class _KeyedFeaturizer(PatchFeaturizer):
    cache_inputs = {"featurizer": "patch", "radius": 2}


def test_dift_feature_cache_keys_on_image_content_not_sample_id(tmp_path, tiny_samples):
    from dragbench.cache import Cache

    cache = Cache(tmp_path / "cache")
    calls: list[dict] = []
    original = cache.get_or_compute

    def recording(namespace, inputs, compute, producers=None):
        calls.append(inputs)
        return original(namespace, inputs, compute, producers)

    cache.get_or_compute = recording
    evaluator = Evaluator(_KeyedFeaturizer(radius=2), PixelFidelity(), cache=cache)
    sample = tiny_samples[0]
    other = replace(sample, image=np.roll(sample.image, 5, axis=0))  # the same sample id, another image
    evaluator._original_features(sample)
    evaluator._original_features(other)
    evaluator._original_features(sample)
    assert not any(sample.sample_id in map(str, c.values()) for c in calls)
    assert (cache.stats["dift/miss"], cache.stats["dift/hit"]) == (2, 1)


# DragDiffusion on the tiny backbone with a small budget (the test_sweeps.py recipe).
TINY_DRAGDIFFUSION = (
    "method=dragdiffusion",
    "model=tiny",
    "eval=fast",
    "dataset.n=1",
    "method.lora_steps=2",
    "method.max_iters=2",
    "method.n_inference_steps=10",
    "method.inversion_step=7",
    "eval.drag_back=true",
)


def test_tiny_dragdiffusion_drag_back_reruns_its_per_image_preparation(make_cfg, monkeypatch):
    """The back edit's LoRA and inversion are computed afresh (cache misses, never hits): their keys hold the
    image content, never the sample id. metrics.json carries both Drag-Back metrics, finite, with CIs."""
    from dragbench.cache import Cache

    calls: list[tuple[Cache, str, dict]] = []
    original = Cache.get_or_compute

    def recording(self, namespace, inputs, compute, producers=None):
        calls.append((self, namespace, inputs))
        return original(self, namespace, inputs, compute, producers)

    monkeypatch.setattr(Cache, "get_or_compute", recording)
    cfg = make_cfg(*TINY_DRAGDIFFUSION)
    metrics = run_from_config(cfg)
    assert metrics["n_ok"] == 1, pd.read_csv(f"{cfg.paths.output_dir}/results.csv")["error"].tolist()
    for name in ("drag_back_fidelity", "drag_back_distance"):
        lo, hi = metrics[f"{name}_ci"]
        assert np.isfinite([metrics[name], lo, hi]).all() and lo <= metrics[name] <= hi, name
    sample_id = pd.read_csv(f"{cfg.paths.output_dir}/results.csv")["sample_id"].iloc[0]
    caches = {id(c): c for c, _, _ in calls}.values()
    for namespace in ("lora", "inversion"):
        keyed = [inputs for _, ns, inputs in calls if ns == namespace]
        assert len(keyed) >= 2, namespace  # the forward edit and the back edit
        assert not any(sample_id in map(str, inputs.values()) for inputs in keyed), namespace
        hits = sum(c.stats[f"{namespace}/hit"] for c in caches)
        misses = sum(c.stats[f"{namespace}/miss"] for c in caches)
        assert (hits, misses) == (0, len(keyed)), namespace


def test_drag_back_reaches_sweep_summary_compare_figure_and_wandb(tmp_path, tiny_samples):
    """Nothing downstream names the metric: the summary, comparison, figure and W&B loop over METRICS."""
    from experiments.compare import compare_runs, to_markdown
    from experiments.figures import plot_fig7
    from experiments.sweep_callback import collect_sweep
    from experiments.wandb_logger import WandbLogger, _table_columns

    job = tmp_path / "sweep" / "0"
    evaluator = Evaluator(PatchFeaturizer(radius=2), PixelFidelity(), drag_back=True)
    metrics = run_job(tiny_samples, ShiftRight(3), evaluator, ResultsStore(job), progress=False)
    summary = collect_sweep(tmp_path / "sweep")
    assert summary["drag_back_distance"].iloc[0] == pytest.approx(6.0)
    assert summary["drag_back_distance_ci_low"].iloc[0] == pytest.approx(6.0)
    table = compare_runs([job])
    assert table["drag_back_fidelity"].iloc[0] == metrics["drag_back_fidelity"]
    assert "gt_distance" not in table  # optional and absent: no empty column
    assert "Drag-Back MD (↓) [95% CI]" in to_markdown(table) and "6.00 [6.00, 6.00]" in to_markdown(table)
    labels = [t.get_label() for ax in plot_fig7(summary).axes for t in ax.get_lines()]
    assert {"MD (↓)", "IF (↑)", "Drag-Back IF (↑)", "Drag-Back MD (↓)"} <= set(labels)

    class FakeRun:
        def __init__(self) -> None:
            self.summary, self.tags = {}, ()

    logger = WandbLogger("p", mode="disabled")
    logger.run = FakeRun()
    logger.log_summary(metrics)
    assert logger.run.summary["drag_back_md/all"] == pytest.approx(6.0)
    assert logger.run.summary["md/all"] == metrics["mean_distance"]
    columns = _table_columns([{"drag_back_fidelity": 1.0, "drag_back_distance": 0.0}])
    assert columns[columns.index("image_fidelity") :][:5] == [
        "image_fidelity", "image_fidelity_unpasted", "drag_back_fidelity", "drag_back_distance", "n_pairs"
    ]


def test_asked_for_drag_back_without_values_is_nan_not_missing():
    """A job with drag_back on whose samples all failed still reports both keys (NaN), never drops them."""
    from eval.aggregate import summarize

    samples = pd.DataFrame(
        dict(sample_id=["a/x"], category=["a"], status=["failed"], image_fidelity=[np.nan])
    )
    pairs = pd.DataFrame(columns=["sample_id", "category", "distance"])
    out = summarize(samples, pairs, metrics=active_metrics(drag_back=True))
    assert np.isnan(out["drag_back_fidelity"]) and np.isnan(out["drag_back_distance_ci"]).all()
    assert "drag_back_fidelity" not in summarize(samples, pairs)  # not asked for, no column: not reported
