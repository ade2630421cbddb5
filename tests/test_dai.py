"""DAI (GoodDrag's Dragging Accuracy Index, protocol §11): known answers, GoodDrag's own script's recorded
numbers (tests/data/official_dai_ref), the declared metrics, and a Drag100 job whose metrics.json carries them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from harness_fakes import PixelFidelity
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict
from PIL import Image

from dragbench import DragSample, load_drag100, load_drag100_sample, save_drag100_sample
from dragbench.synth import synthetic_samples
from eval.dai import DAI_GAMMAS, border_pairs, dai, official_script_mean
from eval.evaluator import Evaluator
from eval.metrics import DAI_METRICS, METRICS, active_metrics
from eval.patch_featurizer import PatchFeaturizer
from eval.score import score_folder
from experiments import CONF_DIR
from experiments.run import run_from_config

REF = Path(__file__).parent / "data" / "official_dai_ref"
ALL_GAMMAS = (1, 5, 10, 20)  # the official script's list


def _smooth(h: int = 96, w: int = 96, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# ---- known answers -------------------------------------------------------------------------------
def test_zero_drag_on_an_unchanged_image_is_zero_and_a_real_drag_is_not():
    image = _smooth()
    points = np.array([[30.0, 35.0], [60.0, 62.0]])
    for gamma in (*DAI_GAMMAS, 0):
        np.testing.assert_array_equal(dai(image, image.copy(), points, points, gamma), [0.0, 0.0])
    # an identity edit of a real drag: the original's own difference between two flat regions
    two_tone = np.zeros((64, 64, 3), np.uint8)
    two_tone[:, :32] = (200, 100, 50)
    two_tone[:, 32:] = (180, 130, 50)
    got = dai(two_tone, two_tone, np.array([[10.0, 30.0]]), np.array([[50.0, 30.0]]), gamma=5)
    assert got == pytest.approx([(20**2 + 30**2) / 255**2], abs=1e-15)


def test_a_pure_translation_by_the_drag_vector_scores_zero_at_every_gamma():
    image = _smooth()
    edited = np.roll(image, (8, 12), axis=(0, 1))  # content moved by (x, y) = (+12, +8)
    handles = np.array([[30.0, 35.0], [40.0, 50.0], [24.0, 22.0]])
    targets = handles + [12.0, 8.0]  # every patch at least 20 px from the border
    for gamma in DAI_GAMMAS:
        np.testing.assert_array_equal(dai(image, edited, handles, targets, gamma), 0.0)
        assert not border_pairs(handles, targets, 96, 96, gamma).any()
    off_by_one = dai(image, edited, handles, targets + [1.0, 0.0], 10)
    assert (off_by_one > 0.01).all()  # noise patches one pixel off differ


def test_a_constant_colour_shift_gives_its_squared_size_even_at_the_border():
    image = np.clip(_smooth(), 20, 200).astype(np.uint8)  # room for +20 / -10 without clipping
    edited = image.astype(np.int16) + (20, -10, 0)
    edited = edited.astype(np.uint8)
    points = np.array([[0.0, 0.0], [48.0, 48.0], [95.0, 40.0]])  # corner, centre, right edge
    for gamma in DAI_GAMMAS:
        got = dai(image, edited, points, points, gamma)
        np.testing.assert_allclose(got, (20**2 + 10**2) / 255**2, rtol=1e-12)  # edge padding keeps it uniform
    np.testing.assert_array_equal(border_pairs(points, points, 96, 96, 20), [True, False, True])


def test_border_patches_are_edge_padded():
    """Column 0 is v, the rest u; a handle on column 0 sees γ+1 replicated columns of v and γ of u. Compared
    with a flat-v patch: γ(2γ+1) pixels differ by (u − v) in all 3 channels, over (2γ+1)² pixels."""
    u, v, gamma = 90, 30, 4
    image = np.full((32, 32, 3), u, np.uint8)
    image[:, 0] = v
    flat = np.full_like(image, v)
    got = dai(image, flat, np.array([[0.0, 16.0]]), np.array([[16.0, 16.0]]), gamma)
    expected = 3 * gamma * (u - v) ** 2 / ((2 * gamma + 1) * 255**2)  # reflect padding would give 2x this
    assert got == pytest.approx([expected], rel=1e-12)


def test_points_round_to_the_nearest_pixel_and_bad_inputs_raise():
    image = _smooth()
    edited = np.roll(image, 1, axis=0)
    a = dai(image, edited, np.array([[10.4, 20.6]]), np.array([[10.0, 22.0]]), 1)
    b = dai(image, edited, np.array([[10.0, 21.0]]), np.array([[10.0, 22.0]]), 1)
    assert a == b and a[0] == 0.0
    with pytest.raises(ValueError, match="resize the edit to the original"):
        dai(image, image[:64], np.zeros((1, 2)), np.zeros((1, 2)), 1)
    with pytest.raises(ValueError, match=r"target \[96, 0\] \(x, y\) lies outside the 96x96 image"):
        dai(image, image, np.zeros((1, 2)), np.array([[96.0, 0.0]]), 1)


# ---- GoodDrag's compute_DAI.py, recorded ----------------------------------------------------------------
def _ref_cases(folder: Path) -> list[tuple[DragSample, np.ndarray]]:
    samples = load_drag100(folder / "dataset")  # our Drag100 loader reads the cases the script read
    edits = [np.asarray(Image.open(folder / "bench_result" / s.name / "output_image.png")) for s in samples]
    return list(zip(samples, edits, strict=True))


def test_matches_the_official_script_per_image_and_per_bench_after_its_second_division_by_n():
    ref = json.loads((REF / "official_dai.json").read_text())
    cases = _ref_cases(REF)
    assert len(cases) == 7
    for gamma in ALL_GAMMAS:
        per_image = []
        for sample, edited in cases:
            ours = dai(sample.image, edited, sample.handles, sample.targets, gamma)  # (N,) per pair
            official = ref["cases"][sample.name]["dai"][str(gamma)]
            assert ref["cases"][sample.name]["n_pairs"] == len(ours)
            assert ours.mean() / len(ours) == pytest.approx(official, abs=1e-7), (sample.name, gamma)
            per_image.append(ours)
        bench = ref["dataset_average"][str(gamma)]["mean_over_images"]
        assert official_script_mean(per_image) == pytest.approx(bench, abs=1e-7)
    red = ref["cases"]["red_shift"]  # 3 pairs: the script reports (20/255)² / 3, we report (20/255)² per pair
    assert red["dai"]["10"] == pytest.approx((20 / 255) ** 2 / 3, rel=1e-6)


def test_where_the_official_script_breaks_at_the_border_we_pad_and_flag():
    ref = json.loads((REF / "official_dai.json").read_text())["cases"]["border"]["dai"]
    assert ref["1"] == 0.0 and ref["5"].startswith("ValueError") and ref["10"] == ref["20"] == 0.0
    sample = load_drag100_sample(REF / "border_case" / "dataset" / "border")
    edited = np.asarray(Image.open(REF / "border_case" / "bench_result" / "border" / "output_image.png"))
    assert dai(sample.image, edited, sample.handles, sample.targets, 1) == [0.0]  # fits: same as official
    for gamma in (5, 10, 20):
        value = dai(sample.image, edited, sample.handles, sample.targets, gamma)[0]
        assert 0.001 < value < 0.05  # finite, and not the official empty-slice 0.0
        assert border_pairs(sample.handles, sample.targets, sample.height, sample.width, gamma).all()


# ---- the declared metrics and a job ------------------------------------------------------------------
def test_dai_is_declared_per_pair_lower_is_better_and_on_by_default():
    assert [m.name for m in DAI_METRICS] == ["dai_1", "dai_10", "dai_20"]
    assert all(m in METRICS and m.per == "pair" and not m.higher_is_better for m in DAI_METRICS)
    assert all(m.opt_in == "dai" and not m.in_figures for m in DAI_METRICS)
    evaluator = Evaluator(PatchFeaturizer(radius=2), PixelFidelity())
    assert set(DAI_METRICS) <= set(evaluator.metrics)  # default on
    off = Evaluator(PatchFeaturizer(radius=2), PixelFidelity(), dai=False)
    assert not set(DAI_METRICS) & set(off.metrics) and set(DAI_METRICS) <= set(active_metrics(dai=True))


def test_the_evaluator_resizes_the_edit_then_scores_dai_per_pair():
    sample = synthetic_samples(1, size=64, seed=0)[0]
    edited = np.asarray(Image.fromarray(sample.image).resize((128, 128), Image.BILINEAR))  # 2x, then back
    score = Evaluator(PatchFeaturizer(radius=2), PixelFidelity()).score(sample, edited)
    assert score.resized_from_hw == (128, 128)
    back = np.asarray(Image.fromarray(edited).resize((64, 64), Image.BILINEAR))
    for gamma in DAI_GAMMAS:
        expected = dai(sample.image, back, sample.handles, sample.targets, gamma)
        np.testing.assert_array_equal(score.values[f"dai_{gamma}"].value, expected)
    columns = score.pair_columns()
    assert {"dai_1", "dai_1_border", "dai_20", "dai_20_border"} <= set(columns)


def test_a_drag100_identity_job_reports_dai_with_cis_beside_md_and_if(tmp_path: Path):
    """`python -m experiments.run dataset=drag100 dataset.root=... method=identity preset=offline logger=none`,
    composed and run in process: identity leaves the image, so each pair's DAI is the original's own
    handle-vs-target patch difference."""
    root = tmp_path / "drag100"
    samples = synthetic_samples(3, size=64, seed=0)
    for sample in samples:
        save_drag100_sample(sample, root / sample.name)
    GlobalHydra.instance().clear()
    overrides = ["preset=offline", "logger=none", "method=identity", "dataset=drag100", f"dataset.root={root}"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir, cfg.paths.cache_dir = str(tmp_path / "job"), str(tmp_path / "cache")
        cfg.device, cfg.aggregate.n_boot = "cpu", 200
    metrics = run_from_config(cfg)
    on_disk = json.loads((tmp_path / "job" / "metrics.json").read_text())
    assert on_disk["n_ok"] == 3 and {"mean_distance", "image_fidelity"} <= set(on_disk)
    loaded = load_drag100(root)
    for gamma in DAI_GAMMAS:
        pairs = [dai(s.image, s.image, s.handles, s.targets, gamma) for s in loaded]
        assert on_disk[f"dai_{gamma}"] == pytest.approx(np.concatenate(pairs).mean(), rel=1e-12)
        low, high = on_disk[f"dai_{gamma}_ci"]
        assert low <= on_disk[f"dai_{gamma}"] <= high and on_disk[f"dai_{gamma}"] > 0
        assert metrics[f"dai_{gamma}"] == on_disk[f"dai_{gamma}"]
    assert on_disk["per_category"]["drag100"]["dai_10"] == on_disk["dai_10"]
    pairs_csv = pd.read_csv(tmp_path / "job" / "pairs.csv")
    assert len(pairs_csv) == on_disk["n_pairs"] and pairs_csv["sample_id"].str.startswith("drag100/").all()
    assert {"dai_1", "dai_10", "dai_20", "dai_20_border"} <= set(pairs_csv.columns)
    results = pd.read_csv(tmp_path / "job" / "results.csv")
    assert {"dai_1", "dai_10", "dai_20"} <= set(results.columns)
    # python -m eval.score reads the same Drag100 root and the job's edits/drag100/<name>/: DAI is pixels only
    _, _, scored = score_folder(tmp_path / "job" / "edits", root, Evaluator(PatchFeaturizer(2), PixelFidelity()))
    assert scored["n_ok"] == 3 and scored["dai_20"] == pytest.approx(on_disk["dai_20"], rel=1e-12)
