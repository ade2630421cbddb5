"""Drag100 (GoodDrag) on disk: `<root>/<name>/{original.jpg, mask.png, points.json}` loads into DragSample,
with DragBench's knobs, one-line validation errors and the `python -m dragbench` tools (protocol §11)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dragbench import InvalidSampleError, load_drag100, load_drag100_sample, save_drag100_sample
from dragbench.cli import main
from dragbench.drag100 import CATEGORY, find_drag100_dirs
from dragbench.synth import synthetic_samples

H, W = 48, 64


def _write(folder: Path, points: list, mask: np.ndarray | None = None, image: np.ndarray | None = None) -> Path:
    """A Drag100 sample folder as GoodDrag stores it: RGB JPEG, mode-L {0, 255} PNG mask, JSON points."""
    folder.mkdir(parents=True, exist_ok=True)
    if image is None:
        yy, xx = np.mgrid[0:H, 0:W]
        image = np.stack([xx * 4, yy * 5, np.full((H, W), 90)], axis=-1).astype(np.uint8)  # (H, W, 3)
    Image.fromarray(image).save(folder / "original.jpg", quality=95)
    if mask is None:
        mask = np.zeros((H, W), np.uint8)
        mask[10:30, 20:50] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    (folder / "points.json").write_text(json.dumps({"points": points}))
    return folder


@pytest.fixture
def drag100_root(tmp_path: Path) -> Path:
    root = tmp_path / "Drag100"
    _write(root / "cat_2", [[20, 15], [30, 12], [40, 20], [44, 25]])
    _write(root / "furniture_0", [[10, 40], [12, 30]])
    _write(root / "leopard", [[50, 8], [60, 9]])
    (root / ".ipynb_checkpoints").mkdir()  # GoodDrag's bench skips it; so do we (hidden folders)
    return root


def test_load_reads_points_mask_and_image_as_goodrag_does(drag100_root: Path) -> None:
    samples = load_drag100(drag100_root)
    assert [s.sample_id for s in samples] == ["drag100/cat_2", "drag100/furniture_0", "drag100/leopard"]
    cat = samples[0]
    assert cat.category == CATEGORY == "drag100" and cat.prompt == ""
    np.testing.assert_array_equal(cat.handles, [[20, 15], [40, 20]])  # even entries: handles, (x, y)
    np.testing.assert_array_equal(cat.targets, [[30, 12], [44, 25]])
    assert cat.mask.dtype == bool and cat.mask.sum() == 20 * 30 and cat.mask[10:30, 20:50].all()
    decoded = np.asarray(Image.open(drag100_root / "cat_2" / "original.jpg"))
    np.testing.assert_array_equal(cat.image, decoded)  # the JPEG's pixels, as decoded by PIL
    assert cat.meta["format"] == "drag100" and cat.meta["size_wh_on_disk"] == [W, H]


def test_knobs_limit_categories_resize(drag100_root: Path) -> None:
    assert [s.name for s in load_drag100(drag100_root, limit=2)] == ["cat_2", "furniture_0"]
    assert len(load_drag100(drag100_root, categories=["drag100"])) == 3
    with pytest.raises(ValueError, match="unknown category 'animals'.*Valid categories: drag100"):
        load_drag100(drag100_root, categories=["animals"])
    with pytest.raises(ValueError, match="limit must be >= 1"):
        load_drag100(drag100_root, limit=0)
    half = load_drag100(drag100_root, resize=32)[0]  # 64x48 -> 32x24, points halved
    assert half.image.shape == (24, 32, 3) and half.mask.shape == (24, 32)
    np.testing.assert_array_equal(half.handles, [[10, 8], [20, 10]])  # round(15/2) = 8 (half to even: 7.5)


def test_first_channel_of_an_rgb_mask_decides(tmp_path: Path) -> None:
    mask = np.zeros((H, W, 3), np.uint8)
    mask[:5, :5, 0] = 255  # editable per channel 0
    mask[40:, 40:, 1:] = 255  # other channels are ignored, as in GoodDrag's bench_gooddrag.py
    sample = load_drag100_sample(_write(tmp_path / "rgbmask", [[1, 1], [2, 2]], mask=mask))
    assert sample.mask.sum() == 25 and sample.mask[:5, :5].all() and sample.meta["mask_mode"] == "RGB"
    folder = _write(tmp_path / "bilevel", [[1, 1], [2, 2]])
    Image.fromarray(mask[..., 0] > 0).save(folder / "mask.png")  # a 1-bit PNG (mode "1")
    sample = load_drag100_sample(folder)
    assert sample.mask.sum() == 25 and sample.meta["mask_mode"] == "1"


def test_round_trip_keeps_points_and_mask_exactly_and_the_image_closely(tmp_path: Path) -> None:
    original = synthetic_samples(3, size=64, seed=0)[2]  # a non-square one (64x48), 1-3 pairs
    loaded = load_drag100_sample(save_drag100_sample(original, tmp_path / original.name))
    assert loaded.sample_id == f"drag100/{original.name}" and loaded.prompt == ""
    np.testing.assert_array_equal(loaded.handles, original.handles)
    np.testing.assert_array_equal(loaded.targets, original.targets)
    np.testing.assert_array_equal(loaded.mask, original.mask)
    mse = np.mean((loaded.image.astype(float) - original.image.astype(float)) ** 2)
    assert 10 * np.log10(255**2 / mse) > 40  # JPEG quality 100, no chroma subsampling: > 40 dB PSNR
    mask_png = np.asarray(Image.open(tmp_path / original.name / "mask.png"))
    assert set(np.unique(mask_png)) <= {0, 255}  # GoodDrag's encoding


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (lambda d: (d / "original.jpg").unlink(), r"original\.jpg: missing file"),
        (lambda d: (d / "original.jpg").write_bytes(b"not a jpeg"), r"original\.jpg: unreadable or corrupt"),
        (lambda d: (d / "points.json").write_text("{points: 1"), r"points\.json: not valid JSON"),
        (lambda d: (d / "points.json").write_text('{"pts": []}'), r"expected an object with key 'points'"),
        (lambda d: (d / "points.json").write_text('{"points": [[1, 2]]}'), r"odd number of points \(1\)"),
        (
            lambda d: (d / "points.json").write_text('{"points": [[1, 2], [64, 3]]}'),
            r"target of pair 0 at \[x, y\] = \[64, 3\] is outside the 64x48 image",
        ),
        (
            lambda d: Image.fromarray(np.zeros((10, 10), np.uint8)).save(d / "mask.png"),
            r"mask\.png: mask size 10x10 != image size 64x48 \(WxH\); resize the mask",
        ),
    ],
)
def test_bad_inputs_raise_one_line_naming_the_file(tmp_path: Path, broken, message: str) -> None:
    folder = _write(tmp_path / "bad", [[1, 2], [3, 4]])
    broken(folder)
    with pytest.raises(InvalidSampleError, match=message) as err:
        load_drag100_sample(folder)
    assert "\n" not in str(err.value) and str(folder) in str(err.value)


def test_root_mistakes_name_the_fix(drag100_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"single Drag100 sample folder; pass its parent"):
        find_drag100_dirs(drag100_root / "cat_2")
    with pytest.raises(ValueError, match=rf"use dataset.root={drag100_root}"):
        find_drag100_dirs(drag100_root.parent)  # the zip's top folder above the samples
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no Drag100 samples under"):
        find_drag100_dirs(tmp_path / "empty")


def test_cli_detects_drag100(drag100_root: Path, tmp_path: Path, capsys) -> None:
    assert main(["validate", str(drag100_root)]) == 0
    assert capsys.readouterr().out.splitlines() == ["all 3 samples valid (4 pairs)"]
    assert main(["stats", str(drag100_root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["drag100", "3", "4", "0"] and lines[-1] == "total: 3 samples, 4 pairs"
    out = tmp_path / "show.png"
    assert main(["show", str(drag100_root / "cat_2"), "--out", str(out)]) == 0
    assert "drag100/cat_2, 2 pairs" in capsys.readouterr().out and Image.open(out).size == (W, H)
    (drag100_root / "leopard" / "mask.png").unlink()
    assert main(["validate", str(drag100_root), "--format", "drag100"]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "drag100/leopard: mask.png: missing file (a Drag100 sample folder "
        "holds original.jpg, mask.png, points.json)"
    ]
    assert "1 of 3 samples invalid" in captured.err
