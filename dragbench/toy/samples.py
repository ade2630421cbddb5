"""Toy-world drag samples with exact ground truth: one object is translated, the edit is re-rendered.

Each sample (category "toy") shows 1–2 flat-coloured shapes on a smooth background (dragbench.toy.scenes).
The last-drawn object is dragged rigidly: 5 handles at integer pixels inside it (its centre and 4 points
spread along its own axes, as a user pins an object to move it whole), each target = handle + the same integer
displacement of 8–20 px (at 64 px; scaled with the size), the mask = the object swept along its path grown by
MASK_MARGIN px. The ground-truth edit renders the same scene with that object moved by the displacement, so
each handle's true final position is exactly its target. Sample i depends only on (seed, i).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dragbench.sample import DragSample
from dragbench.subset import check_categories, check_limit, select_samples
from dragbench.toy.scenes import (
    BACKGROUND_GREY,
    BACKGROUND_TINT,
    BOUNDING_RADIUS,
    COLOUR_NAMES,
    ELLIPSE_MIN_ASPECT,
    PALETTE,
    SHAPES,
    SceneBatch,
    caption,
    object_sdf,
    render,
)

CATEGORY = "toy"
REFERENCE_SIZE = 64  # lengths below are in pixels at this image size and scale with the size
SIZE_RANGE = (6.0, 11.0)  # equivalent radius: objects 12–22 px across
DRAG_RANGE = (8.0, 20.0)  # |target - handle|
MASK_MARGIN = 3.0  # mask = swept object grown by this much
OBJECT_GAP = 2.0  # minimum gap between an object and another object's bounding disc / the drag path
# Handles: the centre and +-HANDLE_SPREAD x size along the object's own axes (inside it for every shape).
# One handle on a flat-coloured object lets DragDiffusion stretch the object toward the target (point tracking
# cannot tell one interior pixel from another); pinning the object at 5 points asks for a translation:
# GT distance / identity 0.68 with 1 random handle vs 0.54 with 5 handles (24 samples, no LoRA; README.md).
HANDLE_SPREAD = 0.35
GT_KEY = "toy_gt"
GT_IMAGE_FILE, GT_JSON_FILE = "ground_truth.png", "gt.json"
_TRIES = 500


def _bound(obj: dict) -> float:
    return obj["size"] * BOUNDING_RADIUS[obj["shape"]]


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = np.clip(np.dot(p - a, ab) / max(np.dot(ab, ab), 1e-9), 0, 1)
    return float(np.linalg.norm(p - (a + t * ab)))


def _random_object(rng: np.random.Generator, colour: str, scale: float) -> dict:
    return {
        "shape": SHAPES[int(rng.integers(len(SHAPES)))],
        "colour": colour,
        "size": float(rng.uniform(*SIZE_RANGE)) * scale,
        "aspect": float(rng.uniform(ELLIPSE_MIN_ASPECT, 1.0)),
        "angle": float(rng.uniform(0, 2 * math.pi)),
    }


def _place_dragged(rng: np.random.Generator, obj: dict, size: int, scale: float) -> np.ndarray | None:
    """Start centre and integer displacement keeping the object inside the image; None if it failed."""
    lo, hi = _bound(obj) + 1, size - 2 - _bound(obj)
    length = rng.uniform(*DRAG_RANGE) * scale
    theta = rng.uniform(0, 2 * math.pi)
    disp = np.round([length * math.cos(theta), length * math.sin(theta)])
    start = rng.uniform(lo, hi, size=2)
    end = start + disp
    if hi <= lo or np.any(end < lo) or np.any(end > hi):
        return None
    obj["centre"], obj["displacement"] = start.tolist(), disp.tolist()
    return start


def _place_other(rng: np.random.Generator, obj: dict, placed: list[dict], dragged: dict, size: int,
                 margin: float) -> bool:
    lo, hi = _bound(obj) + 1, size - 2 - _bound(obj)
    c = rng.uniform(lo, hi, size=2)
    a = np.asarray(dragged["centre"])
    b = a + np.asarray(dragged["displacement"])
    if _segment_distance(c, a, b) < _bound(obj) + _bound(dragged) + margin + OBJECT_GAP:
        return False
    for other in placed:
        if np.linalg.norm(c - np.asarray(other["centre"])) < _bound(obj) + _bound(other) + OBJECT_GAP:
            return False
    obj["centre"] = c.tolist()
    return True


def _layout(rng: np.random.Generator, size: int, max_objects: int) -> list[dict] | None:
    """Objects in drawing order (dragged one last), or None when a placement failed."""
    scale = size / REFERENCE_SIZE
    n_obj = int(rng.integers(1, max_objects + 1))
    colours = [COLOUR_NAMES[i] for i in rng.permutation(len(COLOUR_NAMES))[:n_obj]]
    objects = [_random_object(rng, c, scale) for c in colours]
    dragged = objects[-1]
    if _place_dragged(rng, dragged, size, scale) is None:
        return None
    for i, obj in enumerate(objects[:-1]):
        if not _place_other(rng, obj, objects[:i], dragged, size, MASK_MARGIN * scale):
            return None
    return objects


def _scene(objects: list[dict], background: dict, moved: bool) -> SceneBatch:
    """One-scene SceneBatch; `moved` draws the dragged (last) object at its final position."""
    centres = [np.asarray(o["centre"]) + (np.asarray(o.get("displacement", (0, 0))) if moved else 0)
               for o in objects]
    return SceneBatch(
        shape=torch.tensor([[SHAPES.index(o["shape"]) for o in objects]]),
        centre=torch.tensor(np.stack(centres)[None], dtype=torch.float32),
        size=torch.tensor([[o["size"] for o in objects]]),
        aspect=torch.tensor([[o["aspect"] for o in objects]]),
        angle=torch.tensor([[o["angle"] for o in objects]]),
        colour=torch.tensor([[COLOUR_NAMES.index(o["colour"]) for o in objects]]),
        present=torch.ones(1, len(objects), dtype=torch.bool),
        bg0=torch.tensor([background["bg0"]]),
        bg1=torch.tensor([background["bg1"]]),
        bg_angle=torch.tensor([background["angle"]]),
    )


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image[0].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)  # (H, W, 3)


def _handle_points(obj: dict) -> np.ndarray:
    """The dragged object's handles: its centre and 4 axis points (inside it for every shape), (5, 2) x, y."""
    cos, sin = math.cos(obj["angle"]), math.sin(obj["angle"])
    r = HANDLE_SPREAD * obj["size"]
    axes = np.array([[0.0, 0.0], [r, 0.0], [-r, 0.0], [0.0, r], [0.0, -r]])  # (u, v) in the object's frame
    return np.round(np.asarray(obj["centre"]) + axes @ np.array([[cos, sin], [-sin, cos]]))


def _path_mask(obj: dict, size: int, margin: float) -> np.ndarray:
    """The object swept along its drag (≤ 0.5 px steps), grown by `margin`: bool (H, W)."""
    disp = np.asarray(obj["displacement"])
    n = int(np.ceil(2 * np.linalg.norm(disp))) + 1
    path = [dict(obj, centre=(np.asarray(obj["centre"]) + disp * k / (n - 1)).tolist()) for k in range(n)]
    scene = _scene(path, {"bg0": [0.0] * 3, "bg1": [0.0] * 3, "angle": 0.0}, moved=False)
    return (object_sdf(scene, size, size)[0] <= margin).any(0).numpy()


def toy_sample(index: int, size: int = REFERENCE_SIZE, seed: int = 0, max_objects: int = 2) -> DragSample:
    """The index-th toy drag sample of a seed (depends only on (seed, index, size, max_objects)).

    Returns:
        A DragSample (category "toy", 5 pairs, all on the dragged object) whose meta[GT_KEY] holds the
        ground truth: `gt_image` (uint8 H×W×3), `gt_handles` ((N, 2) x, y: the true final handle positions),
        `pair_objects` (object index of each pair), `objects` (shape, colour, rgb, centre, size, aspect,
        angle, displacement).
    """
    rng = np.random.default_rng([seed, index])
    for _ in range(_TRIES):
        objects = _layout(rng, size, max_objects)
        if objects is not None:
            break
    else:
        raise RuntimeError(f"toy sample {index}: no layout found in {_TRIES} tries at size {size}")
    grey = rng.uniform(*BACKGROUND_GREY, size=2)
    bg = np.clip(grey[:, None] + rng.uniform(-BACKGROUND_TINT, BACKGROUND_TINT, size=(2, 3)), 0, 1)
    background = {"bg0": bg[0].tolist(), "bg1": bg[1].tolist(), "angle": float(rng.uniform(0, 2 * math.pi))}
    dragged = objects[-1]
    handles = _handle_points(dragged)
    targets = handles + np.asarray(dragged["displacement"])
    image = _to_uint8(render(_scene(objects, background, moved=False), size, size)[0])
    gt_image = _to_uint8(render(_scene(objects, background, moved=True), size, size)[0])
    for o in objects:
        o["rgb"] = [round(255 * c) for c in PALETTE[o["colour"]]]
    gt = {
        "gt_image": gt_image,
        "gt_handles": targets.astype(np.float64),
        "pair_objects": [len(objects) - 1] * len(handles),
        "objects": objects,
        "background": background,
        "seed": seed,
        "index": index,
    }
    return DragSample(
        sample_id=f"{CATEGORY}/scene_{index:04d}",
        category=CATEGORY,
        prompt=caption([o["shape"] for o in objects], [o["colour"] for o in objects]),
        image=image,
        mask=_path_mask(dragged, size, MASK_MARGIN * size / REFERENCE_SIZE),
        handles=handles.astype(np.float64),
        targets=targets.astype(np.float64),
        meta={GT_KEY: gt},
    )


def toy_samples(
    n: int,
    size: int = REFERENCE_SIZE,
    seed: int = 0,
    max_objects: int = 2,
    categories: Sequence[str] | str | None = None,
    limit: int | None = None,
) -> list[DragSample]:
    """Samples 0..n-1 of `toy_sample` (the `_target_` of conf/dataset/toy.yaml).

    Args:
        n: number of scenes in the set.
        size, seed, max_objects: see :func:`toy_sample`.
        categories: the toy world has one category, "toy"; accepted like every dataset's `categories`.
        limit: keep the first `limit` samples (None = all); only those are rendered.

    Raises:
        ValueError: n < 1, limit < 1 or a category other than "toy".
    """
    if n < 1:
        raise ValueError(f"dataset.n must be >= 1, got {n}")
    check_limit(limit)
    check_categories(categories, [CATEGORY], "the toy world")
    count = n if limit is None else min(n, limit)
    samples = [toy_sample(i, size=size, seed=seed, max_objects=max_objects) for i in range(count)]
    return select_samples(samples, categories, limit, [CATEGORY], f"the toy world (dataset.n={n})")


def save_toy_sample(sample: DragSample, sample_dir: str | Path) -> Path:
    """Official layout (dragbench.save_sample) plus ground_truth.png and gt.json (ignored by the loader)."""
    from dragbench.bench_io import save_sample

    sample_dir = save_sample(sample, sample_dir)
    gt = dict(sample.meta[GT_KEY])
    Image.fromarray(gt.pop("gt_image")).save(sample_dir / GT_IMAGE_FILE)
    gt["gt_handles"] = np.asarray(gt["gt_handles"]).tolist()
    (sample_dir / GT_JSON_FILE).write_text(json.dumps(gt, indent=1) + "\n")
    return sample_dir


def attach_ground_truth(sample: DragSample, sample_dir: str | Path) -> DragSample:
    """Put the ground truth saved by `save_toy_sample` back into `sample.meta` (in place; returned)."""
    sample_dir = Path(sample_dir)
    gt = json.loads((sample_dir / GT_JSON_FILE).read_text())
    gt["gt_image"] = np.asarray(Image.open(sample_dir / GT_IMAGE_FILE).convert("RGB"))
    gt["gt_handles"] = np.asarray(gt["gt_handles"], dtype=np.float64)
    sample.meta[GT_KEY] = gt
    return sample
