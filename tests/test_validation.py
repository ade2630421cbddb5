"""Each DragBench validation rule (protocol §1) gives one InvalidSampleError naming the file, reason and value."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dragbench import DragSample, InvalidSampleError, load_sample, save_sample
from dragbench.validation import validate_sample

H, W = 48, 64


def _good_meta() -> dict:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[10:30, 10:40] = 1
    return {"prompt": "a photo of a red disc", "points": [[20, 20], [30, 22], [5, 40], [9, 44]], "mask": mask}


def _write(tmp_path: Path, meta: object | None = None, image: bytes | None = None) -> Path:
    """Write a sample folder animals/bad with a 64x48 RGB image and the given meta (defaults are valid)."""
    sample_dir = tmp_path / "animals" / "bad"
    sample_dir.mkdir(parents=True)
    if image is None:
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(sample_dir / "original_image.png")
    else:
        (sample_dir / "original_image.png").write_bytes(image)
    meta = _good_meta() if meta is None else meta
    (sample_dir / "meta_data.pkl").write_bytes(pickle.dumps(meta, protocol=4))
    return sample_dir


def _meta_with(**changes: object) -> dict:
    meta = _good_meta()
    meta.update(changes)
    return meta


def _expect(sample_dir: Path, file: str, *fragments: str) -> InvalidSampleError:
    with pytest.raises(InvalidSampleError) as info:
        load_sample(sample_dir)
    err = info.value
    assert str(err).startswith(f"{sample_dir / file}: "), str(err)
    assert err.reason.startswith(f"{file}: ")
    for fragment in fragments:
        assert fragment in str(err), (fragment, str(err))
    return err


def test_valid_sample_loads(tmp_path: Path) -> None:
    sample = load_sample(_write(tmp_path))
    assert sample.sample_id == "animals/bad" and sample.n_pairs == 2
    np.testing.assert_array_equal(sample.handles, [[20, 20], [5, 40]])
    np.testing.assert_array_equal(sample.targets, [[30, 22], [9, 44]])
    assert sample.mask.dtype == bool and int(sample.mask.sum()) == 20 * 30


def test_missing_image(tmp_path: Path) -> None:
    sample_dir = _write(tmp_path)
    (sample_dir / "original_image.png").unlink()
    _expect(sample_dir, "original_image.png", "missing file")


def test_missing_meta(tmp_path: Path) -> None:
    sample_dir = _write(tmp_path)
    (sample_dir / "meta_data.pkl").unlink()
    _expect(sample_dir, "meta_data.pkl", "missing file")


def test_garbage_png(tmp_path: Path) -> None:
    _expect(_write(tmp_path, image=b"not a png at all"), "original_image.png", "unreadable or corrupt image")


def test_truncated_png(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    full = _write(tmp_path / "full")
    Image.fromarray(noise).save(full / "original_image.png")
    data = (full / "original_image.png").read_bytes()
    _expect(
        _write(tmp_path, image=data[: len(data) // 2]), "original_image.png", "unreadable or corrupt image"
    )


def test_meta_not_a_dict(tmp_path: Path) -> None:
    _expect(_write(tmp_path, meta=[1, 2]), "meta_data.pkl", "expected a dict", "got list")


def test_missing_key(tmp_path: Path) -> None:
    meta = _good_meta()
    del meta["mask"]
    _expect(_write(tmp_path, meta=meta), "meta_data.pkl", "missing key 'mask'", "['points', 'prompt']")


def test_prompt_not_str(tmp_path: Path) -> None:
    _expect(
        _write(tmp_path, meta=_meta_with(prompt=None)), "meta_data.pkl", "prompt must be a str", "NoneType"
    )


def test_odd_number_of_points(tmp_path: Path) -> None:
    meta = _meta_with(points=[[20, 20], [30, 22], [5, 40]])
    _expect(_write(tmp_path, meta=meta), "meta_data.pkl", "odd number of points (3)", "[5, 40] has no target")


def test_odd_number_of_point_coordinates(tmp_path: Path) -> None:
    meta = _meta_with(points=[20, 20, 30])
    _expect(
        _write(tmp_path, meta=meta), "meta_data.pkl", "odd number of point coordinates (3)", "[20, 20, 30]"
    )


def test_point_not_a_pair(tmp_path: Path) -> None:
    meta = _meta_with(points=[[20, 20, 1], [30, 22, 1]])
    _expect(_write(tmp_path, meta=meta), "meta_data.pkl", "[x, y] pairs", "shape (2, 3)")


def test_point_outside_image(tmp_path: Path) -> None:
    meta = _meta_with(points=[[20, 20], [30, 22], [5, 40], [W, 44]])
    _expect(
        _write(tmp_path, meta=meta),
        "meta_data.pkl",
        "target of pair 1 at [x, y] = [64, 44] is outside the 64x48 image",
        "x in [0, 63]",
    )


def test_negative_point(tmp_path: Path) -> None:
    meta = _meta_with(points=[[-1, 20], [30, 22]])
    _expect(_write(tmp_path, meta=meta), "meta_data.pkl", "handle of pair 0 at [x, y] = [-1, 20]")


def test_mask_shape_mismatch(tmp_path: Path) -> None:
    meta = _meta_with(mask=np.zeros((W, H), np.uint8))
    _expect(_write(tmp_path, meta=meta), "meta_data.pkl", "mask shape (64, 48) != image shape (48, 64)")


def test_mask_values(tmp_path: Path) -> None:
    mask = _good_meta()["mask"]
    mask[0, 0] = 2
    _expect(
        _write(tmp_path, meta=_meta_with(mask=mask)), "meta_data.pkl", "outside {0,1} or {0,255}", "[0, 1, 2]"
    )


def test_mask_mixing_one_and_255(tmp_path: Path) -> None:
    mask = _good_meta()["mask"]
    mask[0, 0] = 255
    _expect(_write(tmp_path, meta=_meta_with(mask=mask)), "meta_data.pkl", "saw [0, 1, 255]")


def test_zero_pairs(tmp_path: Path) -> None:
    _expect(_write(tmp_path, meta=_meta_with(points=[])), "meta_data.pkl", "zero pairs")


def test_mask_255_is_valid(tmp_path: Path) -> None:
    mask = _good_meta()["mask"] * 255
    sample = load_sample(_write(tmp_path, meta=_meta_with(mask=mask)))
    assert sample.mask.dtype == bool and int(sample.mask.sum()) == 600
    assert sample.meta["mask_encoding"] == "0/255"


def test_empty_mask_is_valid(tmp_path: Path) -> None:
    sample = load_sample(_write(tmp_path, meta=_meta_with(mask=np.zeros((H, W), np.uint8))))
    assert not sample.mask.any()


def test_numpy_int_points_are_valid(tmp_path: Path) -> None:
    meta = _meta_with(points=np.array([[20, 20], [30, 22]], dtype=np.int64))
    sample = load_sample(_write(tmp_path, meta=meta))
    np.testing.assert_array_equal(sample.targets, [[30.0, 22.0]])


def _sample(**changes: object) -> DragSample:
    fields = dict(
        sample_id="animals/x",
        category="animals",
        prompt="p",
        image=np.zeros((H, W, 3), np.uint8),
        mask=np.zeros((H, W), bool),
        handles=np.array([[1.0, 2.0]]),
        targets=np.array([[3.0, 4.0]]),
    )
    fields.update(changes)
    return DragSample(**fields)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"image": np.zeros((H, W), np.uint8)}, "image must be uint8 (H, W, 3)"),
        ({"image": np.zeros((H, W, 3), np.float32)}, "image must be uint8 (H, W, 3), got float32"),
        ({"mask": np.zeros((H, W + 1), bool)}, "mask shape (48, 65) != image shape (48, 64)"),
        ({"targets": np.array([[3.0, 4.0], [5.0, 6.0]])}, "1 handles but 2 targets"),
        ({"handles": np.zeros((0, 2)), "targets": np.zeros((0, 2))}, "zero pairs"),
        ({"targets": np.array([[3.0, 48.0]])}, "target of pair 0 at [x, y] = [3, 48] is outside the 64x48"),
        ({"handles": np.array([[np.nan, 1.0]])}, "must be finite"),
    ],
)
def test_in_memory_rules_and_nothing_written(tmp_path: Path, changes: dict, fragment: str) -> None:
    sample = _sample(**changes)
    with pytest.raises(InvalidSampleError, match="animals/x: ") as info:
        validate_sample(sample)
    assert fragment in str(info.value)
    with pytest.raises(InvalidSampleError):
        save_sample(sample, tmp_path / "animals" / "x")
    assert not (tmp_path / "animals" / "x").exists()
