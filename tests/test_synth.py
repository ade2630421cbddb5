"""Synthetic DragBench-layout samples: deterministic, valid, with known drags."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from dragbench import CATEGORIES, load_bench
from dragbench.synth import PALETTE, synthetic_sample, synthetic_samples, write_synthetic_bench

PROMPT = re.compile(
    r"^a photo of an? \w+ (disc|square)((, an? \w+ (disc|square))* and an? \w+ (disc|square))? "
    r"on an? \w+ background$"
)


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    write_synthetic_bench(tmp_path / "a", n=12, size=64, seed=7)
    write_synthetic_bench(tmp_path / "b", n=12, size=64, seed=7)
    write_synthetic_bench(tmp_path / "c", n=12, size=64, seed=8)
    a, b, c = _hashes(tmp_path / "a"), _hashes(tmp_path / "b"), _hashes(tmp_path / "c")
    assert len(a) == 36 and a == b
    assert a.keys() == c.keys() and a != c


def test_samples_are_valid_and_match_the_spec(tmp_path: Path) -> None:
    size = 64
    samples = synthetic_samples(20, size=size, seed=0)
    assert [s.sample_id for s in samples] == sorted(s.sample_id for s in samples)
    assert {s.category for s in samples} == set(CATEGORIES)
    assert {(s.width, s.height) for s in samples} == {(64, 64), (64, 48)}
    for s in samples:
        assert 1 <= s.n_pairs <= 3 and PROMPT.match(s.prompt), s.prompt
        dist = np.linalg.norm(s.targets - s.handles, axis=1)
        assert ((dist >= 0.05 * size) & (dist <= 0.15 * size)).all(), dist
        objects = s.meta["synthetic"]["objects"]
        assert len(objects) == s.n_pairs and len({o["colour"] for o in objects}) == s.n_pairs
        for o, h, t in zip(objects, s.handles.astype(int), s.targets.astype(int), strict=True):
            # The handle sits on the object's centre, where the shading is 1: the exact palette colour.
            assert tuple(s.image[h[1], h[0]]) == PALETTE[o["colour"]]
            assert f"{o['colour']} {o['shape']}" in s.prompt
            # The mask covers the object, its target position and the path between.
            for frac in np.linspace(0, 1, 5):
                x, y = np.round(h + frac * (t - h)).astype(int)
                assert s.mask[y, x]
        assert 0.02 < s.mask.mean() < 0.6
    write_synthetic_bench(tmp_path, n=20, size=size, seed=0)
    loaded = load_bench(tmp_path)
    assert [s.sample_id for s in loaded] == [s.sample_id for s in samples]
    for a, b in zip(loaded, samples, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.handles, b.handles)


def test_sample_i_does_not_depend_on_n() -> None:
    few = {s.sample_id: s for s in synthetic_samples(3, size=48, seed=2)}
    many = {s.sample_id: s for s in synthetic_samples(9, size=48, seed=2)}
    for sid, s in few.items():
        np.testing.assert_array_equal(s.image, many[sid].image)
    assert synthetic_sample(1, 48, 2).sample_id == "land_scape/synthetic_0001"
    assert synthetic_sample(2, 48, 2).image.shape == (
        32,
        48,
        3,
    )  # round(48 * 0.75 / 8) * 8 = round(4.5) * 8 = 32


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="size must be >= 32"):
        synthetic_samples(2, size=16)
    with pytest.raises(ValueError, match="n must be >= 1"):
        synthetic_samples(0)
