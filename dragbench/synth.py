"""Synthetic samples in the DragBench layout (protocol §1): textured backgrounds, coloured objects, known drags.

Each sample has 1-3 objects (discs or squares); each object carries one handle (its centre) and a target
5-15 % of the image width away; the mask covers each object and its path. Sample i depends only on
(seed, i), so `n` can grow without changing earlier samples, and the same seed gives byte-identical files.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dragbench.bench_io import CATEGORIES, save_sample
from dragbench.sample import DragSample
from dragbench.subset import check_categories, check_limit, select_samples

logger = logging.getLogger(__name__)

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (50, 160, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 215, 40),
    "magenta": (210, 50, 200),
    "cyan": (40, 200, 210),
    "orange": (240, 140, 30),
    "grey": (128, 128, 128),
}
SHAPES = ("disc", "square")
MIN_SIZE = 32  # smallest width where 3 objects of radius >= 3 px still fit with their drags
MAX_PAIRS = 3
DRAG_FRACTION = (0.05, 0.15)  # |target - handle| as a fraction of the width
RADIUS_FRACTION = (0.07, 0.11)  # object radius (half side for squares) as a fraction of the width
MASK_MARGIN_FRACTION = 0.03  # mask = object swept along its drag, grown by this fraction of the width
WIDE_EVERY = 3  # every 3rd sample (i % 3 == 2) is non-square: height = round(0.75 * size / 8) * 8
_PLACEMENT_TRIES = 200
_TEXTURE_AMPLITUDE = 28.0
_NOISE_AMPLITUDE = 6.0


def _height(index: int, size: int) -> int:
    return round(size * 0.75 / 8) * 8 if index % WIDE_EVERY == WIDE_EVERY - 1 else size


def _background(rng: np.random.Generator, rgb: tuple[int, int, int], height: int, width: int) -> np.ndarray:
    """Base colour + a random low-frequency sinusoidal texture + small noise; float (H, W, 3)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)  # (H, W) each
    fx, fy = rng.uniform(1.0, 3.0, size=2) / width
    px, py = rng.uniform(0.0, 1.0, size=2)
    wave = np.sin(2 * np.pi * (fx * xx + px)) * np.cos(2 * np.pi * (fy * yy + py))  # (H, W)
    noise = rng.uniform(-_NOISE_AMPLITUDE, _NOISE_AMPLITUDE, size=(height, width, 1))
    return np.asarray(rgb, dtype=np.float64) + _TEXTURE_AMPLITUDE * wave[..., None] + noise  # (H, W, 3)


def _segment_distance(xx: np.ndarray, yy: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distance of each pixel (xx, yy) to the segment start→end ((x, y) pixels)."""
    vec = end - start
    t = ((xx - start[0]) * vec[0] + (yy - start[1]) * vec[1]) / max(float(vec @ vec), 1e-12)
    t = np.clip(t, 0.0, 1.0)
    return np.hypot(xx - (start[0] + t * vec[0]), yy - (start[1] + t * vec[1]))


def _segments_gap(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """Approximate distance between two segments (sampled at 9 points each)."""
    ts = np.linspace(0.0, 1.0, 9)[:, None]
    pa = a[0] + ts * (a[1] - a[0])  # (9, 2)
    pb = b[0] + ts * (b[1] - b[0])  # (9, 2)
    return float(np.min(np.linalg.norm(pa[:, None] - pb[None], axis=-1)))


def _place(rng: np.random.Generator, size: int, height: int, radius: int, placed: list) -> tuple | None:
    """Pick an integer handle and target so the object stays inside and clear of earlier objects."""
    lo_d, hi_d = DRAG_FRACTION[0] * size, DRAG_FRACTION[1] * size
    margin = radius + 1
    for _ in range(_PLACEMENT_TRIES):
        handle = np.array([rng.integers(margin, size - margin), rng.integers(margin, height - margin)], float)
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(lo_d, hi_d)
        target = np.round(handle + dist * np.array([np.cos(angle), np.sin(angle)]))
        inside = margin <= target[0] < size - margin and margin <= target[1] < height - margin
        if not inside or not lo_d <= np.linalg.norm(target - handle) <= hi_d:
            continue
        if all(_segments_gap((handle, target), (h, t)) > radius + r + 2 for h, t, r in placed):
            return handle, target
    return None


def _draw_object(canvas: np.ndarray, shape: str, center: np.ndarray, radius: int, rgb: tuple) -> None:
    """Paint a radially shaded disc or square (so features are trackable) into a float (H, W, 3) canvas."""
    yy, xx = np.mgrid[0 : canvas.shape[0], 0 : canvas.shape[1]].astype(np.float64)  # (H, W) each
    dx, dy = xx - center[0], yy - center[1]
    inside = np.hypot(dx, dy) <= radius if shape == "disc" else np.maximum(abs(dx), abs(dy)) <= radius
    shade = 1.0 - 0.35 * np.clip(np.hypot(dx, dy) / (radius * np.sqrt(2)), 0, 1) ** 2  # (H, W)
    canvas[inside] = np.asarray(rgb, dtype=np.float64)[None] * shade[inside][:, None]


def _article(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _describe(objects: list[dict], background: str) -> str:
    names = [_article(f"{o['colour']} {o['shape']}") for o in objects]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"a photo of {listed} on {_article(background)} background"


def synthetic_sample(index: int, size: int = 64, seed: int = 0) -> DragSample:
    """Sample number `index` of the synthetic bench for (size, seed); see the module docstring.

    Args:
        index: sample number (>= 0); the category is CATEGORIES[index % 10].
        size: image width in pixels (>= 32); every 3rd sample is size x round(0.75 size / 8) * 8 (W x H).
        seed: base seed (>= 0).

    Returns:
        The sample; `meta["synthetic"]` holds the seed, index, background colour and the objects.
    """
    if size < MIN_SIZE:
        raise ValueError(f"synthetic size must be >= {MIN_SIZE}, got {size}")
    rng = np.random.default_rng([seed, index])
    height = _height(index, size)
    colours = list(PALETTE)
    background = colours[int(rng.integers(len(colours)))]
    choices = [c for c in colours if c != background]
    canvas = _background(rng, PALETTE[background], height, size)
    yy, xx = np.mgrid[0:height, 0:size].astype(np.float64)  # (H, W) each
    mask = np.zeros((height, size), dtype=bool)
    placed: list = []
    objects: list[dict] = []
    lo_r, hi_r = (max(3, round(f * size)) for f in RADIUS_FRACTION)
    for _ in range(int(rng.integers(1, MAX_PAIRS + 1))):
        radius = int(rng.integers(lo_r, hi_r + 1))
        spot = _place(rng, size, height, radius, placed)
        if spot is None:
            break
        handle, target = spot
        colour = choices.pop(int(rng.integers(len(choices))))
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        _draw_object(canvas, shape, handle, radius, PALETTE[colour])
        grow = radius * (np.sqrt(2) if shape == "square" else 1.0) + max(
            2, round(MASK_MARGIN_FRACTION * size)
        )
        mask |= _segment_distance(xx, yy, handle, target) <= grow
        placed.append((handle, target, radius))
        objects.append({"colour": colour, "shape": shape, "radius": radius, "center_xy": handle.tolist()})
    category = CATEGORIES[index % len(CATEGORIES)]
    name = f"synthetic_{index:04d}"
    return DragSample(
        sample_id=f"{category}/{name}",
        category=category,
        prompt=_describe(objects, background),
        image=np.clip(np.rint(canvas), 0, 255).astype(np.uint8),
        mask=mask,
        handles=np.array([p[0] for p in placed], dtype=np.float64),
        targets=np.array([p[1] for p in placed], dtype=np.float64),
        meta={"synthetic": {"seed": seed, "index": index, "background": background, "objects": objects}},
    )


def synthetic_samples(
    n: int,
    size: int = 64,
    seed: int = 0,
    categories: Sequence[str] | str | None = None,
    limit: int | None = None,
) -> list[DragSample]:
    """`n` synthetic samples (in memory), sorted like `load_bench` returns them (category, then name).

    Args:
        n: number of samples generated (>= 1); sample i has category CATEGORIES[i % 10].
        size: image width (>= 32).
        seed: base seed.
        categories: keep only these DragBench categories (None = all), as `load_bench`.
        limit: then keep the first `limit` samples of the sorted order (None = all), as `load_bench`.

    Returns:
        The samples; sample i is `synthetic_sample(i, size, seed)`.

    Raises:
        ValueError: n < 1, size < 32, limit < 1, an unknown category or none of its samples among the n.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    check_limit(limit)
    check_categories(categories, CATEGORIES, "the synthetic set")
    samples = sorted((synthetic_sample(i, size, seed) for i in range(n)), key=lambda s: (s.category, s.name))
    return select_samples(samples, categories, limit, CATEGORIES, f"the synthetic set (dataset.n={n})")


def write_synthetic_bench(out: str | Path, n: int, size: int = 64, seed: int = 0) -> list[Path]:
    """Write `synthetic_samples(n, size, seed)` in the official layout under `out`.

    Args:
        out: bench root to create (`<out>/<category>/<name>/`).
        n, size, seed: see :func:`synthetic_samples`.

    Returns:
        The sample folders written.
    """
    out = Path(out)
    dirs = [save_sample(s, out / s.category / s.name) for s in synthetic_samples(n, size, seed)]
    logger.info("wrote %d synthetic samples (size %d, seed %d) to %s", len(dirs), size, seed, out)
    return dirs
