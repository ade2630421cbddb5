"""Ground-truth metrics of toy-world edits (dragbench.toy): where each handle's content really ended up.

The dragged object is found by colour in the original and in the edited image (dragbench.toy.locate); the
handle keeps its offset within the object, so its true final position is the handle moved by the object's
displacement. `gt_distance` = |that position − target| per pair. An object whose visible pixel count falls
below LOST_FRACTION of the original's is "lost" (dissolved or recoloured); a lost pair counts as not moved
(distance = |handle − target|), so dissolving an object never looks like a good drag. Pure functions.
"""

from __future__ import annotations

import numpy as np

from dragbench.sample import DragSample
from dragbench.toy.locate import locate_object
from dragbench.toy.samples import GT_KEY
from dragbench.toy.scenes import BOUNDING_RADIUS

LOST_FRACTION = 0.5  # an object with < 50 % of its original pixel count in the edit is lost
RADIUS_MARGIN = 2.0  # search radius = bounding radius + this (px)


def _object_location(image: np.ndarray, objects: list[dict], k: int) -> tuple[np.ndarray, int]:
    obj = objects[k]
    others = np.array([o["rgb"] for j, o in enumerate(objects) if j != k]).reshape(-1, 3)
    radius = obj["size"] * BOUNDING_RADIUS[obj["shape"]] + RADIUS_MARGIN
    return locate_object(image, np.asarray(obj["rgb"]), radius, others)


def object_displacements(sample: DragSample, edited: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Displacement of every object from the original to the edited image, and whether it survived.

    Args:
        sample: a toy sample (meta holds the ground truth).
        edited: uint8 (H, W, 3) edited image, same size as sample.image.

    Returns:
        displacement (K, 2) float (x, y) pixels (NaN when not found at all) and found (K,) bool.
    """
    objects = sample.meta[GT_KEY]["objects"]
    disp = np.full((len(objects), 2), np.nan)
    found = np.zeros(len(objects), dtype=bool)
    for k in range(len(objects)):
        c0, n0 = _object_location(sample.image, objects, k)
        c1, n1 = _object_location(edited, objects, k)
        disp[k] = c1 - c0
        found[k] = n0 > 0 and n1 >= LOST_FRACTION * n0
    return disp, found


def has_ground_truth(sample: DragSample) -> bool:
    """True for samples that carry a rendered true edit (toy-world samples)."""
    return GT_KEY in sample.meta


def gt_final_handles(sample: DragSample, edited: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each handle's content ended up in `edited`: (N, 2) (x, y) and found (N,) bool.

    Lost objects give the handle itself (not moved). Samples without ground truth give NaN / False.
    """
    n = sample.n_pairs
    if GT_KEY not in sample.meta:
        return np.full((n, 2), np.nan), np.zeros(n, dtype=bool)
    if edited.shape != sample.image.shape:
        raise ValueError(f"edited image shape {edited.shape} != sample image shape {sample.image.shape}")
    disp, found_obj = object_displacements(sample, edited)
    pair_obj = np.asarray(sample.meta[GT_KEY]["pair_objects"])
    found = found_obj[pair_obj]
    final = np.asarray(sample.handles, dtype=np.float64) + np.where(found[:, None], disp[pair_obj], 0.0)
    return final, found


def gt_pair_distances(sample: DragSample, edited: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth drag distance per pair: |true final handle − target| (pixels).

    Args:
        sample: a DragSample; only toy samples (meta[GT_KEY]) have ground truth.
        edited: uint8 (H, W, 3).

    Returns:
        distances (N,) float (NaN without ground truth; |handle − target| for a lost object) and
        found (N,) bool (False without ground truth or when the pair's object was lost).
    """
    final, found = gt_final_handles(sample, edited)
    return np.linalg.norm(final - np.asarray(sample.targets, dtype=np.float64), axis=1), found


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR (dB) of two uint8 images over all pixels or the True pixels of `mask` (H, W); inf if equal."""
    err = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = err[mask].mean() if mask is not None else err.mean()
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def gt_image_metrics(sample: DragSample, edited: np.ndarray) -> dict[str, float]:
    """Pixel metrics of the edit against the ground-truth edit (NaN without ground truth).

    Returns:
        gt_psnr (whole image vs the GT edit), gt_mae (mean |diff| in 0–255 units), gt_psnr_outside_mask
        (vs the GT edit where the mask is False: what should be unchanged), lost_objects (count, all objects).
    """
    if GT_KEY not in sample.meta:
        return dict.fromkeys(("gt_psnr", "gt_mae", "gt_psnr_outside_mask", "lost_objects"), float("nan"))
    gt = sample.meta[GT_KEY]["gt_image"]
    outside = ~np.asarray(sample.mask, dtype=bool)
    _, found = object_displacements(sample, edited)
    return {
        "gt_psnr": psnr(edited, gt),
        "gt_mae": float(np.abs(edited.astype(np.float64) - gt).mean()),
        "gt_psnr_outside_mask": psnr(edited, gt, outside) if outside.any() else float("nan"),
        "lost_objects": float((~found).sum()),
    }
