"""Toy-world generator: determinism, ground-truth consistency, official-layout round trip (dragbench.toy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dragbench import load_sample
from dragbench.toy.locate import locate_object
from dragbench.toy.samples import (
    GT_IMAGE_FILE,
    GT_JSON_FILE,
    GT_KEY,
    attach_ground_truth,
    save_toy_sample,
    toy_sample,
    toy_samples,
)
from dragbench.toy.scenes import BOUNDING_RADIUS, batch_captions, random_scenes, render


@pytest.fixture(scope="module")
def samples():
    return toy_samples(8, seed=0)


def test_same_seed_same_bytes_and_index_independent_of_n(samples):
    again = toy_samples(3, seed=0)
    for a, b in zip(samples[:3], again, strict=True):
        assert a.image.tobytes() == b.image.tobytes()
        assert a.meta[GT_KEY]["gt_image"].tobytes() == b.meta[GT_KEY]["gt_image"].tobytes()
        assert np.array_equal(a.mask, b.mask) and np.array_equal(a.handles, b.handles)
        assert a.prompt == b.prompt
    assert toy_sample(0, seed=1).image.tobytes() != samples[0].image.tobytes()


def test_sample_contract(samples):
    for s in samples:
        assert s.category == "toy" and s.sample_id.startswith("toy/scene_")
        assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
        assert s.mask.dtype == bool and s.n_pairs == 5
        drag = s.targets - s.handles
        assert np.all(drag == drag[0])  # one rigid displacement for every handle
        length = np.linalg.norm(drag, axis=1)
        assert np.all((length >= 7.5) & (length <= 20.5))  # 8-20 px, displacement rounded to integers
        assert len(np.unique(s.handles, axis=0)) == 5  # distinct points pin the object
        assert np.array_equal(s.handles, np.round(s.handles))
        assert np.array_equal(s.targets, np.round(s.targets))


def test_ground_truth_object_sits_at_the_target(samples):
    for s in samples:
        gt = s.meta[GT_KEY]
        assert gt["pair_objects"] == [len(gt["objects"]) - 1] * s.n_pairs  # all handles on the dragged object
        obj = gt["objects"][gt["pair_objects"][0]]
        radius = obj["size"] * BOUNDING_RADIUS[obj["shape"]] + 2
        c0, n0 = locate_object(s.image, np.array(obj["rgb"]), radius)
        c1, n1 = locate_object(gt["gt_image"], np.array(obj["rgb"]), radius)
        np.testing.assert_allclose(c0, obj["centre"], atol=0.1)
        np.testing.assert_allclose(c1 - c0, obj["displacement"], atol=0.1)
        np.testing.assert_allclose(s.handles + (c1 - c0), gt["gt_handles"], atol=0.1)
        np.testing.assert_array_equal(gt["gt_handles"], s.targets)
        assert abs(n1 - n0) <= 3  # the moved object is not clipped or occluded
        # every handle is on the object and every target on the moved object; the mask covers both
        for (hx, hy), (tx, ty) in zip(s.handles.astype(int), s.targets.astype(int), strict=True):
            assert np.linalg.norm(s.image[hy, hx].astype(float) - obj["rgb"]) < 2
            assert np.linalg.norm(gt["gt_image"][ty, tx].astype(float) - obj["rgb"]) < 2
        obj_pixels = np.linalg.norm(s.image.astype(float) - obj["rgb"], axis=-1) < 2
        gt_pixels = np.linalg.norm(gt["gt_image"].astype(float) - obj["rgb"], axis=-1) < 2
        assert s.mask[obj_pixels].all() and s.mask[gt_pixels].all()
        # outside the mask the original and the GT edit are identical
        assert np.array_equal(s.image[~s.mask], gt["gt_image"][~s.mask])
        assert obj["colour"] in s.prompt and obj["shape"] in s.prompt


def test_save_load_round_trip(samples, tmp_path):
    s = samples[1]
    folder = save_toy_sample(s, tmp_path / "toy" / s.name)
    assert (folder / GT_IMAGE_FILE).exists() and (folder / GT_JSON_FILE).exists()
    loaded = attach_ground_truth(load_sample(folder), folder)
    assert loaded.sample_id == s.sample_id and loaded.prompt == s.prompt
    assert np.array_equal(loaded.image, s.image) and np.array_equal(loaded.mask, s.mask)
    assert np.array_equal(loaded.meta[GT_KEY]["gt_image"], s.meta[GT_KEY]["gt_image"])
    np.testing.assert_array_equal(loaded.meta[GT_KEY]["gt_handles"], s.targets)


def test_random_training_scenes_render_in_range_with_matching_captions():
    scene = random_scenes(16, 64, torch.Generator().manual_seed(0))
    image, coverage = render(scene, 64, 64)
    assert image.shape == (16, 3, 64, 64) and coverage.shape == (16, 3, 64, 64)
    assert 0 <= image.min() and image.max() <= 1
    # absent slots cover nothing; every present object is visible somewhere
    assert coverage[~scene.present].sum() == 0
    assert (coverage.amax((-1, -2)) > 0.99)[scene.present].all()
    captions = batch_captions(scene)
    assert [c.count(" and ") + c.count(", ") + 1 for c in captions] == scene.present.sum(1).tolist()


def test_dataset_yaml_matches_the_generator_signature():
    import inspect

    from omegaconf import OmegaConf

    from experiments import CONF_DIR

    node = OmegaConf.load(CONF_DIR / "dataset" / "toy.yaml")
    assert node._target_ == "dragbench.toy.samples.toy_samples"
    params = inspect.signature(toy_samples).parameters
    for key, value in node.items():
        if key == "_target_":
            continue
        assert key in params
        default = params[key].default
        assert default is inspect.Parameter.empty or default == value, (key, value, default)
