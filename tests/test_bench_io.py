"""Loading, saving and resizing DragBench-layout samples (protocol §1; official-ref inputs README for resize)."""

from __future__ import annotations

import json
import logging
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shared_data import SHARED_DATA

from dragbench import DragSample, load_bench, load_sample, resize_sample, save_sample
from dragbench.synth import synthetic_samples

SHARED = SHARED_DATA
REAL = SHARED / "dragbench-real"
REF_INPUTS = SHARED / "official-ref/inputs-128"


def _need(path: Path) -> Path:
    if not path.is_dir():
        pytest.skip(f"shared data absent at {path}")
    return path


@pytest.fixture(scope="module")
def real() -> list[DragSample]:
    return load_bench(_need(REAL))


def test_real_bench_loads_12_samples_20_pairs(real: list[DragSample]) -> None:
    assert len(real) == 12
    assert sum(s.n_pairs for s in real) == 20
    assert [s.sample_id for s in real] == sorted(s.sample_id for s in real)
    assert real[0].sample_id == "animals/animal_1" and real[-1].sample_id == "other_objects/other_objects_1"
    for s in real:
        assert s.image.dtype == np.uint8 and s.image.shape == (*s.mask.shape, 3)
        assert s.mask.dtype == bool and s.mask.any()
        assert s.handles.shape == s.targets.shape == (s.n_pairs, 2)


def test_real_non_square_keep_size(real: list[DragSample]) -> None:
    sizes = {s.sample_id: (s.width, s.height) for s in real}
    assert sizes["interior_design/interior_design_2"] == (512, 341)
    assert sizes["human_full_body/human_full_body_1"] == (512, 768)
    assert sizes["interior_design/interior_design_1"] == (512, 732)


def test_real_points_are_xy_as_on_disk(real: list[DragSample]) -> None:
    for s in real:
        with open(REAL / s.sample_id / "meta_data.pkl", "rb") as fh:
            raw = pickle.load(fh)  # trusted test data
        pts = np.asarray(raw["points"], dtype=np.float64)
        np.testing.assert_array_equal(s.handles, pts[0::2])
        np.testing.assert_array_equal(s.targets, pts[1::2])
        assert s.prompt == raw["prompt"]
        assert int(s.mask.sum()) == int(raw["mask"].sum())
    # interior_design_2: first handle [170, 137] is x=170 (column), y=137 (row).
    s = next(s for s in real if s.name == "interior_design_2")
    np.testing.assert_array_equal(s.handles[0], [170, 137])


def test_categories_and_limit() -> None:
    root = _need(REAL)
    picked = load_bench(root, categories=["land_scape", "animals"], limit=2)
    assert [s.sample_id for s in picked] == ["animals/animal_1", "animals/animal_2"]
    assert [s.sample_id for s in load_bench(root, categories="interior_design")] == [
        "interior_design/interior_design_1",
        "interior_design/interior_design_2",
    ]
    with pytest.raises(ValueError, match=r"unknown category 'animal'.*did you mean 'animals'\?.*art_work"):
        load_bench(root, categories=["animal"])
    with pytest.raises(ValueError, match="limit must be >= 1"):
        load_bench(root, limit=0)


def test_bad_roots(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_bench(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no samples under"):
        load_bench(tmp_path)
    save_sample(synthetic_samples(1)[0], tmp_path / "animals" / "s")
    with pytest.raises(ValueError, match="single sample folder"):
        load_bench(tmp_path / "animals" / "s")


def test_resize_matches_official_ref_inputs() -> None:
    root, ref_root = _need(REAL), _need(REF_INPUTS)
    info = json.loads((ref_root / "resize_info.json").read_text())
    samples = load_bench(root, categories=["animals", "interior_design", "land_scape"], resize=128)
    checked = 0
    for s in samples:
        if s.sample_id not in info:
            continue
        ref = load_sample(ref_root / s.sample_id)
        np.testing.assert_array_equal(s.image, ref.image)  # LANCZOS, bit-exact
        np.testing.assert_array_equal(s.mask, ref.mask)
        np.testing.assert_array_equal(s.handles, ref.handles)
        np.testing.assert_array_equal(s.targets, ref.targets)
        assert int(s.mask.sum()) == info[s.sample_id]["mask_sum"]
        assert s.meta["resize"]["from_wh"] == info[s.sample_id]["orig_wh"]
        assert s.meta["resize"]["to_wh"] == info[s.sample_id]["new_wh"]
        checked += 1
    assert checked == 3


def _sample(width: int, height: int, handles: list, targets: list) -> DragSample:
    mask = np.zeros((height, width), bool)
    mask[: height // 2] = True
    return DragSample(
        sample_id="animals/x",
        category="animals",
        prompt="p",
        image=np.zeros((height, width, 3), np.uint8),
        mask=mask,
        handles=np.asarray(handles, float),
        targets=np.asarray(targets, float),
    )


def test_resize_rule_known_answers() -> None:
    # 512x341 -> width 128: H' = round(341*128/512/8)*8 = round(10.656)*8 = 88; at width 512: 344.
    s = _sample(512, 341, [[170, 137], [511, 340]], [[171, 90], [2, 1]])
    small = resize_sample(s, 128)
    assert (small.width, small.height) == (128, 88)
    # x: round(170/4)=42, round(171/4)=43 (42.75), round(2/4)=0 (0.5 -> even 0); y: round(137*88/341)=35.
    np.testing.assert_array_equal(small.handles, [[42, 35], [127, 87]])  # [128, 88] clipped into the image
    np.testing.assert_array_equal(small.targets, [[43, 23], [0, 0]])
    assert small.meta["resize"]["clipped_points"] == 1
    assert small.mask.shape == (88, 128) and int(small.mask.sum()) == 128 * 44
    assert (resize_sample(s, 512).width, resize_sample(s, 512).height) == (512, 344)
    assert s.height == 341 and "resize" not in s.meta  # input untouched
    with pytest.raises(ValueError, match="resize width"):
        resize_sample(s, 0)


def test_round_trip_is_exact(tmp_path: Path) -> None:
    for s in synthetic_samples(6, size=64, seed=5):
        back = load_sample(save_sample(s, tmp_path / s.category / s.name))
        assert back.sample_id == s.sample_id and back.category == s.category and back.prompt == s.prompt
        np.testing.assert_array_equal(back.image, s.image)
        np.testing.assert_array_equal(back.mask, s.mask)
        np.testing.assert_array_equal(back.handles, s.handles)
        np.testing.assert_array_equal(back.targets, s.targets)
        assert back.handles.dtype == np.float64


def test_saved_pickle_is_official_format(tmp_path: Path) -> None:
    s = _sample(64, 48, [[1, 2], [10, 20]], [[3, 4], [30, 40]])
    sample_dir = save_sample(s, tmp_path / "animals" / "x")
    assert sorted(p.name for p in sample_dir.iterdir()) == [
        "meta_data.pkl",
        "original_image.png",
        "user_drag.png",
    ]
    with open(sample_dir / "meta_data.pkl", "rb") as fh:
        meta = pickle.load(fh)  # our own file
    assert list(meta) == ["prompt", "points", "mask"]
    assert meta["points"] == [[1, 2], [3, 4], [10, 20], [30, 40]]
    assert all(type(v) is int for p in meta["points"] for v in p)
    assert meta["mask"].dtype == np.uint8 and set(np.unique(meta["mask"]).tolist()) == {0, 1}
    drag = np.asarray(Image.open(sample_dir / "user_drag.png"))
    assert drag.shape == (48, 64, 3) and (drag != s.image).any()


def test_non_integral_points_are_rounded_with_a_warning(tmp_path: Path, caplog) -> None:
    s = _sample(64, 48, [[1.4, 2.6]], [[3.5, 4.5]])
    with caplog.at_level(logging.WARNING, logger="dragbench.bench_io"):
        back = load_sample(save_sample(s, tmp_path / "animals" / "x"))
    np.testing.assert_array_equal(back.handles, [[1, 3]])
    np.testing.assert_array_equal(back.targets, [[4, 4]])  # Python round: half to even
    assert "2 non-integral point(s) rounded" in caplog.text


@pytest.mark.parametrize(
    ("mode", "expected"), [("RGBA", (10, 20, 30)), ("L", (77, 77, 77)), ("P", (10, 20, 30))]
)
def test_non_rgb_images_become_rgb(tmp_path: Path, mode: str, expected: tuple) -> None:
    sample_dir = save_sample(_sample(16, 8, [[1, 1]], [[2, 2]]), tmp_path / "animals" / "x")
    rgb = Image.new("RGB", (16, 8), (10, 20, 30))
    image = {
        "RGBA": Image.new("RGBA", (16, 8), (10, 20, 30, 128)),
        "L": Image.new("L", (16, 8), 77),
        "P": rgb.convert("P", palette=Image.Palette.ADAPTIVE),
    }[mode]
    image.save(sample_dir / "original_image.png")
    s = load_sample(sample_dir)
    assert s.image.shape == (8, 16, 3) and tuple(s.image[3, 5]) == expected
    assert s.meta["image_mode"] == mode


def test_package_import_is_light() -> None:
    code = "import sys, dragbench; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
