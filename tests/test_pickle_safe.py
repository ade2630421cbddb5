"""Restricted unpickler for meta_data.pkl: numpy arrays/scalars and containers only (protocol §1)."""

from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shared_data import REAL_SAMPLES

from dragbench import InvalidSampleError, load_sample
from dragbench.pickle_safe import safe_load, safe_loads

REAL = REAL_SAMPLES


def _meta() -> dict:
    mask = np.zeros((6, 8), dtype=np.uint8)
    mask[2:4, 3:6] = 1
    return {"prompt": "a photo of a cat", "points": [[np.int64(1), np.int32(2)], [3, 4]], "mask": mask}


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_every_protocol_round_trips(protocol: int) -> None:
    meta = _meta()
    loaded = safe_loads(pickle.dumps(meta, protocol=protocol))
    assert loaded["prompt"] == "a photo of a cat"
    assert loaded["points"] == [[1, 2], [3, 4]]
    assert isinstance(loaded["points"][0][0], np.int64)
    np.testing.assert_array_equal(loaded["mask"], meta["mask"])
    assert loaded["mask"].dtype == np.uint8


def test_numpy1_spelling_is_accepted() -> None:
    # Protocol 2 writes globals as text lines; rewrite numpy 2's `numpy._core` to numpy 1's `numpy.core`.
    data = pickle.dumps(_meta(), protocol=2)
    assert b"numpy._core.multiarray\n" in data
    legacy = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    loaded = safe_loads(legacy)
    assert int(loaded["mask"].sum()) == 6


def test_real_pickles_match_plain_pickle() -> None:
    files = sorted(REAL.glob("*/*/meta_data.pkl"))
    if not files:
        pytest.skip(f"real DragBench samples absent at {REAL}")
    for f in files:
        with open(f, "rb") as fh:
            plain = pickle.load(fh)  # trusted test data: compare against the unrestricted loader
        safe = safe_load(f)
        assert safe["prompt"] == plain["prompt"] and safe["points"] == plain["points"]
        np.testing.assert_array_equal(safe["mask"], plain["mask"])


class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Open:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class _Popen:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (subprocess.Popen, (["touch", str(self.marker)],))


@pytest.mark.parametrize(
    ("payload", "refused"),
    [
        (_System, f"refused global {os.system.__module__}.system"),  # posix.system on Linux
        (_Open, "refused global io.open"),
        (_Popen, "refused global subprocess.Popen"),
    ],
)
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, payload, refused: str) -> None:
    marker = tmp_path / "pwned"
    meta = {"prompt": "x", "points": [[0, 0], [1, 1]], "mask": payload(marker)}
    data = pickle.dumps(meta, protocol=4)
    with pytest.raises(InvalidSampleError, match=refused):
        safe_loads(data)
    assert not marker.exists()
    # The same through load_sample: the message names the file and the refused global.
    sample_dir = tmp_path / "animals" / "evil"
    sample_dir.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(sample_dir / "original_image.png")
    (sample_dir / "meta_data.pkl").write_bytes(data)
    with pytest.raises(InvalidSampleError) as info:
        load_sample(sample_dir)
    assert str(sample_dir / "meta_data.pkl") in str(info.value)
    assert info.value.reason.startswith(f"meta_data.pkl: {refused}")
    assert not marker.exists()


@pytest.mark.parametrize(
    "global_name",
    [
        "os.system",
        "builtins.open",
        "builtins.eval",
        "builtins.getattr",
        "numpy.load",
        "numpy.lib.format.read_array",
    ],
)
def test_other_globals_are_refused(global_name: str) -> None:
    module, name = global_name.rsplit(".", 1)
    data = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R."
    with pytest.raises(InvalidSampleError, match=f"refused global {global_name}"):
        safe_loads(data)


def test_corrupt_pickle_is_invalid_sample() -> None:
    data = pickle.dumps(_meta(), protocol=4)
    with pytest.raises(InvalidSampleError, match="corrupt pickle"):
        safe_loads(data[: len(data) // 2], source="x/meta_data.pkl")
