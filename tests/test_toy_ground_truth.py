"""GT metrics of toy edits (eval/toy_ground_truth.py) and the colour locator, on rendered scenes."""

from __future__ import annotations

import numpy as np
import pytest

from dragbench.sample import DragSample
from dragbench.toy.locate import locate, locate_object
from dragbench.toy.samples import GT_KEY, toy_samples
from eval.toy_ground_truth import gt_final_handles, gt_image_metrics, gt_pair_distances, psnr


@pytest.fixture(scope="module")
def samples():
    return toy_samples(8, seed=3)


def test_locator_is_exact_on_rendered_scenes(samples):
    errors = []
    for s in samples:
        for obj in s.meta[GT_KEY]["objects"]:
            c, n = locate_object(s.image, np.array(obj["rgb"]), obj["size"] * 2 + 2)
            errors.append(np.abs(c - obj["centre"]).max())
            assert n > 0.8 * np.pi * obj["size"] ** 2  # area of a disc of the equivalent radius
    assert max(errors) < 0.2  # sub-pixel: anti-aliased edges are thresholded by colour


def test_locator_ignores_stray_pixels_and_empty_masks():
    mask = np.zeros((40, 40), dtype=bool)
    mask[10:15, 20:25] = True  # 5x5 blob centred at (x, y) = (22, 12)
    mask[35, 2] = True  # a stray pixel far away
    centre, n = locate(mask, radius=5)
    np.testing.assert_allclose(centre, [22, 12])
    assert n == 25
    centre, n = locate(np.zeros((8, 8), dtype=bool), radius=3)
    assert np.isnan(centre).all() and n == 0


def test_gt_edit_has_zero_distance_identity_has_drag_length(samples):
    for s in samples:
        d, found = gt_pair_distances(s, s.meta[GT_KEY]["gt_image"])
        assert found.all() and d.max() < 0.1
        d, found = gt_pair_distances(s, s.image)
        np.testing.assert_allclose(d, np.linalg.norm(s.targets - s.handles, axis=1), atol=0.1)
        assert found.all()


def test_shifted_edit_gives_known_distance(samples):
    s = samples[0]
    k = 3  # move the whole GT edit 3 px to the right (edge columns repeat the background)
    shifted = np.concatenate([s.meta[GT_KEY]["gt_image"][:, :1].repeat(k, 1),
                              s.meta[GT_KEY]["gt_image"][:, :-k]], axis=1)
    final, found = gt_final_handles(s, shifted)
    np.testing.assert_allclose(final, s.targets + [k, 0], atol=0.1)
    d, _ = gt_pair_distances(s, shifted)
    np.testing.assert_allclose(d, np.full(s.n_pairs, k), atol=0.1)


def test_lost_object_counts_as_not_moved(samples):
    s = samples[0]
    gt = s.meta[GT_KEY]
    erased = gt["gt_image"].copy()
    obj_pixels = np.linalg.norm(erased.astype(float) - gt["objects"][-1]["rgb"], axis=-1) < 80
    erased[obj_pixels] = 128  # paint the dragged object grey
    d, found = gt_pair_distances(s, erased)
    assert not found.any()
    np.testing.assert_allclose(d, np.linalg.norm(s.targets - s.handles, axis=1))
    assert gt_image_metrics(s, erased)["lost_objects"] == 1


def test_no_ground_truth_gives_nan_and_false(samples):
    s = samples[0]
    plain = DragSample(s.sample_id, s.category, s.prompt, s.image, s.mask, s.handles, s.targets, meta={})
    d, found = gt_pair_distances(plain, s.image)
    assert d.shape == (s.n_pairs,) and np.isnan(d).all() and not found.any()
    assert all(np.isnan(v) for v in gt_image_metrics(plain, s.image).values())


def test_pixel_metrics_known_answers(samples):
    s = samples[0]
    gt = s.meta[GT_KEY]["gt_image"]
    m = gt_image_metrics(s, gt)
    assert m["gt_psnr"] == np.inf and m["gt_mae"] == 0 and m["lost_objects"] == 0
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255  # MSE = 255² / 48 -> PSNR = 10 log10(48)
    assert psnr(a, b) == pytest.approx(10 * np.log10(48))


def test_evaluator_and_summary_report_gt_distance(samples):
    """Scoring a toy sample attaches ground truth; the bench gt_distance is the mean over pairs with a CI."""
    import pandas as pd

    from eval.aggregate import summarize
    from eval.evaluator import Evaluator
    from eval.patch_featurizer import PatchFeaturizer

    class PixelFidelity:
        weights = "real"

        def __call__(self, a, b):
            return 1.0 - float(np.abs(a.astype(float) - b.astype(float)).mean() / 255)

    evaluator = Evaluator(PatchFeaturizer(position_weight=1.0), PixelFidelity())
    rows, pairs = [], []
    for k, s in enumerate(samples[:4]):
        edited = s.meta[GT_KEY]["gt_image"] if k % 2 == 0 else s.image  # perfect edit / identity
        score = evaluator.score(s, edited)
        assert score.gt_distances is not None and score.gt_distances.shape == (s.n_pairs,)
        rows.append({"sample_id": s.sample_id, "category": s.category, "status": "ok",
                     "image_fidelity": score.image_fidelity})
        pairs += [{"sample_id": s.sample_id, "category": s.category, "distance": d, "gt_distance": g}
                  for d, g in zip(score.distances, score.gt_distances, strict=True)]
    drag = [np.linalg.norm(s.targets - s.handles, axis=1) for s in samples[1:4:2]]
    expected = np.concatenate([np.zeros(2 * len(samples[0].handles)), *drag]).sum() / len(pairs)
    out = summarize(pd.DataFrame(rows), pd.DataFrame(pairs), n_boot=200, seed=0)
    assert out["gt_distance"] == pytest.approx(expected, abs=0.1)
    assert out["gt_distance_ci"][0] <= out["gt_distance"] <= out["gt_distance_ci"][1]
    no_gt = summarize(pd.DataFrame(rows), pd.DataFrame(pairs).drop(columns="gt_distance"), n_boot=50)
    assert "gt_distance" not in no_gt
