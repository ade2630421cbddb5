"""Dragging Accuracy Index (DAI), GoodDrag §5 (protocol §11): how well the content at each handle reached its
target: the squared RGB distance (summed over channels), averaged over the (2γ+1)² pixels of the patch around
the handle in the original vs the one around the target in the edit (images in [0, 1]; lower is better).

Per pair (GoodDrag's formula, as protocol §11 reads it): DAI_γ = ‖Ω(edit, t, γ) − Ω(original, h, γ)‖² / (2γ+1)²,
the squared L2 norm taken over the patch's pixels and RGB channels. Where this differs from GoodDrag's
`evaluation/compute_DAI.py`:

- Borders: a patch reaching past the image is completed by edge padding (each missing pixel repeats the
  nearest border pixel, numpy `mode="edge"`); the official slicing breaks there (an empty or short patch, or a
  shape error). `border_pairs` says which pairs needed padding.
- Points are rounded to the nearest pixel (numpy rint); the official script takes the integer points of
  points.json as given.
- Size: the edit is compared at the original's size (the evaluator resizes it bilinearly first, as for MD);
  the official script assumes equal sizes.
- Normalisation: the official script divides each image's sum by its number of pairs N twice (its per-image
  value is the paper's divided by N); :func:`official_script_mean` reproduces its bench number from ours.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DAI_GAMMAS = (1, 10, 20)  # GoodDrag Table 1 reports γ = 1, 10, 20 (its script also runs 5)
PAD_MODE = "edge"  # numpy.pad mode completing patches that cross the border (see the module docstring)
PIXEL_MAX = 255.0  # uint8 -> [0, 1], as the official script's torchvision ToTensor


def _patches(image01: np.ndarray, points_xy: np.ndarray, gamma: int) -> np.ndarray:
    """The (2γ+1)² patches centred on each point, edge-padded at the border.

    Args:
        image01: float (H, W, C) image.
        points_xy: (N, 2) integer (x, y) pixels inside the image.
        gamma: patch radius γ >= 0.

    Returns:
        float (N, 2γ+1, 2γ+1, C).
    """
    padded = np.pad(image01, ((gamma, gamma), (gamma, gamma), (0, 0)), mode=PAD_MODE)  # (H+2γ, W+2γ, C)
    side = 2 * gamma + 1
    # pixel (y, x) sits at (y + γ, x + γ) in `padded`, so its patch starts at (y, x) there
    return np.stack([padded[y : y + side, x : x + side] for x, y in points_xy])  # (N, side, side, C)


def _pixel_points(points_xy: np.ndarray, height: int, width: int, role: str) -> np.ndarray:
    """(N, 2) float (x, y) -> nearest integer pixels, checked to lie inside the image."""
    points = np.rint(np.asarray(points_xy, dtype=np.float64)).astype(np.int64).reshape(-1, 2)  # (N, 2)
    inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
    if not inside.all():
        bad = points[~inside][0].tolist()
        raise ValueError(f"DAI: {role} {bad} (x, y) lies outside the {width}x{height} image")
    return points


def dai(
    original: np.ndarray, edited: np.ndarray, handles: np.ndarray, targets: np.ndarray, gamma: int
) -> np.ndarray:
    """DAI_γ of every pair: ‖Ω(edited, target, γ) − Ω(original, handle, γ)‖² / (2γ+1)², images in [0, 1].

    Args:
        original: uint8 (H, W, 3) original image.
        edited: uint8 (H, W, 3) edited image of the same size.
        handles: (N, 2) (x, y) pixels in the original (rounded to the nearest pixel).
        targets: (N, 2) (x, y) pixels in the edit (rounded likewise).
        gamma: patch radius γ >= 0 (GoodDrag reports 1, 10, 20).

    Returns:
        float64 (N,): per pair, the squared RGB error summed over the patch, divided by its (2γ+1)² pixels
        (so a uniform shift of c in one channel gives c²; identical content gives 0).

    Raises:
        ValueError: images of different shapes, γ < 0, or a point outside the image.
    """
    if original.shape != edited.shape:
        raise ValueError(
            f"DAI: original {original.shape} and edited {edited.shape} differ; resize the edit to the original"
        )
    if gamma < 0:
        raise ValueError(f"DAI: gamma must be >= 0, got {gamma}")
    height, width = original.shape[:2]
    handles_px = _pixel_points(handles, height, width, "handle")
    targets_px = _pixel_points(targets, height, width, "target")
    source = _patches(np.asarray(original, np.float64) / PIXEL_MAX, handles_px, gamma)  # (N, s, s, 3)
    moved = _patches(np.asarray(edited, np.float64) / PIXEL_MAX, targets_px, gamma)  # (N, s, s, 3)
    return np.square(moved - source).sum(axis=(1, 2, 3)) / (2 * gamma + 1) ** 2  # (N,)


def border_pairs(handles: np.ndarray, targets: np.ndarray, height: int, width: int, gamma: int) -> np.ndarray:
    """Which pairs have a handle or target patch crossing the image border (completed by padding).

    Returns:
        bool (N,); True where the official script would have broken or measured a short patch.
    """
    out = np.zeros(len(handles), dtype=bool)
    for points in (handles, targets):
        px = np.rint(np.asarray(points, dtype=np.float64)).reshape(-1, 2)  # (N, 2) (x, y)
        out |= (px[:, 0] < gamma) | (px[:, 1] < gamma)
        out |= (px[:, 0] > width - 1 - gamma) | (px[:, 1] > height - 1 - gamma)
    return out


def official_script_mean(per_sample: Sequence[np.ndarray]) -> float:
    """The bench number GoodDrag's `compute_DAI.py` prints, from our per-pair values.

    It sums an image's pairs, divides by N, by (2γ+1)² and by N again, then averages images: each image counts
    once with (its mean DAI) / N. Ours pools pairs (each pair counts once), without the second 1/N.

    Args:
        per_sample: one (N_i,) array of per-pair DAI values (this module's :func:`dai`) per image.

    Returns:
        mean over images of mean(values_i) / N_i.
    """
    if not per_sample:
        raise ValueError("official_script_mean: no images")
    return float(np.mean([np.mean(v) / len(v) for v in per_sample]))
