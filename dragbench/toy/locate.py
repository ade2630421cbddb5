"""Find a toy-world object by its colour: the ground-truth locator behind eval/toy_ground_truth.py.

A pixel belongs to an object when its colour is within COLOUR_TOL of the object's palette colour and closer
to it than to any other object colour of the scene. The object's centre is the centroid of its pixels inside
a disc around the densest spot (so stray pixels of the colour elsewhere do not pull it), refined a few times.
Points are (x, y) pixels, pixel (col, row) centred at (col, row), as in dragbench.toy.scenes.
"""

from __future__ import annotations

import numpy as np

COLOUR_TOL = 60.0  # max RGB distance (0–255 units) of an object pixel to its palette colour
REFINE_ITERS = 5


def colour_mask(image: np.ndarray, rgb: np.ndarray, other_rgbs: np.ndarray | None = None,
                tol: float = COLOUR_TOL) -> np.ndarray:
    """Pixels of one object colour.

    Args:
        image: uint8 (H, W, 3).
        rgb: (3,) the object's colour, 0–255.
        other_rgbs: (M, 3) the other objects' colours (a pixel nearer to one of them is not this object's).
        tol: max distance to `rgb`.

    Returns:
        bool (H, W).
    """
    pix = image.astype(np.float64)
    dist = np.linalg.norm(pix - np.asarray(rgb, dtype=np.float64), axis=-1)  # (H, W)
    mask = dist < tol
    for other in np.asarray(other_rgbs if other_rgbs is not None else np.zeros((0, 3))).reshape(-1, 3):
        mask &= dist <= np.linalg.norm(pix - other.astype(np.float64), axis=-1)
    return mask


def _box_count(mask: np.ndarray, r: int) -> np.ndarray:
    """Number of True pixels in the (2r+1)² box around each pixel (integral image)."""
    padded = np.pad(mask.astype(np.int64), r)  # (H + 2r, W + 2r)
    c = np.pad(padded.cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # (H + 2r + 1, W + 2r + 1), leading zeros
    k = 2 * r + 1
    return c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]


def locate(mask: np.ndarray, radius: float) -> tuple[np.ndarray, int]:
    """Centre and pixel count of the blob of `mask` within `radius` of the densest spot.

    Args:
        mask: bool (H, W) object pixels.
        radius: search radius in pixels (about the object's bounding radius).

    Returns:
        centre (2,) float (x, y) (NaN when the mask is empty) and the number of pixels within `radius`.
    """
    if not mask.any():
        return np.full(2, np.nan), 0
    ys, xs = np.nonzero(mask)
    density = _box_count(mask, max(1, int(round(radius / 2))))
    start = np.unravel_index(np.argmax(np.where(mask, density, -1)), mask.shape)  # (row, col)
    centre = np.array([start[1], start[0]], dtype=np.float64)
    for _ in range(REFINE_ITERS):
        near = (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 <= radius**2
        centre = np.array([xs[near].mean(), ys[near].mean()])
    near = (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 <= radius**2
    return centre, int(near.sum())


def locate_object(image: np.ndarray, rgb: np.ndarray, radius: float, other_rgbs: np.ndarray | None = None,
                  tol: float = COLOUR_TOL) -> tuple[np.ndarray, int]:
    """`locate(colour_mask(...), radius)`: the (x, y) centre and pixel count of one coloured object."""
    return locate(colour_mask(image, rgb, other_rgbs, tol), radius)
