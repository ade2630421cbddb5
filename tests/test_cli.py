"""`python -m dragbench` validate/stats/show/synth, and the drag drawing behind `show` and user_drag.png."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shared_data import REAL_SAMPLES

from dragbench import DragSample, save_sample
from dragbench.cli import main
from dragbench.visualize import ARROW_RGB, HANDLE_RGB, MASK_TINT_ALPHA, TARGET_RGB, draw_drag

REAL = REAL_SAMPLES


def _run(capsys, *argv: str) -> tuple[int, list[str], str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err


def test_validate_valid_bench(tmp_path: Path, capsys) -> None:
    assert main(["synth", str(tmp_path), "--n", "5", "--size", "32", "--seed", "1"]) == 0
    code, lines, _ = _run(capsys, "validate", str(tmp_path))
    assert code == 0 and lines[-1].startswith("all 5 samples valid")


def test_validate_reports_each_bad_sample_and_checks_the_rest(tmp_path: Path, capsys) -> None:
    main(["synth", str(tmp_path), "--n", "6", "--seed", "3"])
    capsys.readouterr()
    (tmp_path / "animals/synthetic_0004/original_image.png").unlink()
    meta_path = tmp_path / "land_scape/synthetic_0001/meta_data.pkl"
    meta = pickle.loads(meta_path.read_bytes())
    meta["points"] = meta["points"][:1]
    meta_path.write_bytes(pickle.dumps(meta, protocol=4))
    code, lines, err = _run(capsys, "validate", str(tmp_path))
    assert code == 1
    assert lines == [
        "animals/synthetic_0004: original_image.png: missing file",
        "land_scape/synthetic_0001: meta_data.pkl: odd number of points (1): points alternate handle, "
        f"target, so the last handle {meta['points'][0]} has no target",
    ]
    assert "2 of 6 samples invalid" in err


def test_validate_and_stats_on_real_bench(capsys) -> None:
    if not REAL.is_dir():
        pytest.skip(f"real DragBench samples absent at {REAL}")
    code, lines, _ = _run(capsys, "validate", str(REAL))
    assert code == 0 and lines == ["all 12 samples valid (20 pairs)"]
    code, lines, _ = _run(capsys, "stats", str(REAL))
    assert code == 0
    assert lines[-1] == "total: 12 samples, 20 pairs"
    assert "image sizes (WxH): 512x512 (7), 512x341 (2), 512x768 (2), 512x732 (1)" in lines
    assert "empty masks: 0" in lines
    interior = next(line for line in lines if line.startswith("interior_design"))
    assert interior.split() == ["interior_design", "2", "6", "0"]


def test_stats_counts_empty_masks_and_flags_invalid(tmp_path: Path, capsys) -> None:
    main(["synth", str(tmp_path), "--n", "4", "--size", "40"])
    meta_path = tmp_path / "art_work/synthetic_0000/meta_data.pkl"
    meta = pickle.loads(meta_path.read_bytes())
    meta["mask"][:] = 0
    meta_path.write_bytes(pickle.dumps(meta, protocol=4))
    capsys.readouterr()
    code, lines, _ = _run(capsys, "stats", str(tmp_path))
    pairs = sum(len(pickle.loads(p.read_bytes())["points"]) // 2 for p in tmp_path.glob("*/*/meta_data.pkl"))
    assert code == 0 and lines[-1] == f"total: 4 samples, {pairs} pairs"
    assert "empty masks: 1" in lines and "image sizes (WxH): 40x40 (3), 40x32 (1)" in lines
    (tmp_path / "art_work/synthetic_0000/meta_data.pkl").write_bytes(b"junk")
    code, lines, err = _run(capsys, "stats", str(tmp_path))
    assert code == 1 and lines[-1].startswith("total: 3 samples") and "skipped art_work/synthetic_0000" in err


def test_unusable_root_exits_2(tmp_path: Path, capsys) -> None:
    code, _, err = _run(capsys, "validate", str(tmp_path / "missing"))
    assert code == 2 and "does not exist" in err


def _long_drag_sample() -> DragSample:
    image = np.full((64, 128, 3), 100, np.uint8)
    mask = np.zeros((64, 128), bool)
    mask[:, 100:] = True
    return DragSample(
        sample_id="animals/long",
        category="animals",
        prompt="p",
        image=image,
        mask=mask,
        handles=np.array([[10.0, 32.0]]),
        targets=np.array([[90.0, 32.0]]),
    )


def test_draw_drag_known_pixels() -> None:
    s = _long_drag_sample()
    out = draw_drag(s.image, s.mask, s.handles, s.targets)
    assert out.dtype == np.uint8 and out.shape == s.image.shape
    assert tuple(out[32, 10]) == HANDLE_RGB and tuple(out[32, 90]) == TARGET_RGB
    assert tuple(out[32, 50]) == ARROW_RGB  # the arrow's middle
    tinted = round((1 - MASK_TINT_ALPHA) * 100 + MASK_TINT_ALPHA * 255)
    assert tuple(out[5, 120]) == (tinted,) * 3  # editable region, tinted
    assert tuple(out[5, 50]) == (100, 100, 100)  # elsewhere untouched
    assert (s.image == 100).all()  # input not modified
    final = draw_drag(s.image, None, s.handles, s.targets, final=np.array([[70.0, 10.0]]))
    assert tuple(final[10, 70]) == (0, 255, 0) and tuple(final[5, 120]) == (100, 100, 100)


def test_show_writes_png_with_the_arrow(tmp_path: Path, capsys) -> None:
    s = _long_drag_sample()
    sample_dir = save_sample(s, tmp_path / "animals" / "long")
    out = tmp_path / "figs" / "show.png"
    code, lines, _ = _run(capsys, "show", str(sample_dir), "--out", str(out))
    assert code == 0 and lines == [f"wrote {out} (animals/long, 1 pair)"]
    assert out.stat().st_size > 0
    shown = np.asarray(Image.open(out).convert("RGB"))
    assert shown.shape == s.image.shape
    assert (shown[32, 30:70] != s.image[32, 30:70]).any(axis=-1).all()  # along the arrow
    assert tuple(shown[32, 50]) == ARROW_RGB
    np.testing.assert_array_equal(shown[5:20, 30:70], s.image[5:20, 30:70])  # away from it


def test_show_invalid_sample_exits_1(tmp_path: Path, capsys) -> None:
    code, _, err = _run(capsys, "show", str(tmp_path), "--out", str(tmp_path / "x.png"))
    assert code == 1 and "missing file" in err


def test_module_entry_point_synth_then_validate(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "dragbench",
        "synth",
        str(tmp_path),
        "--n",
        "3",
        "--size",
        "32",
        "--seed",
        "4",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip() == f"wrote 3 synthetic samples to {tmp_path}"
    assert len(list(tmp_path.glob("*/*/user_drag.png"))) == 3
    done = subprocess.run(
        [sys.executable, "-m", "dragbench", "validate", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
