"""Mean Distance point matching (protocol §3): where did each handle's feature end up in the edited image?

Mirrors DragDiffusion's `drag_bench_evaluation/run_eval_point_matching.py`: both feature maps upsampled
bilinearly to the image size, the original's feature read at the (integer) handle pixel, cosine-similarity
argmax over the whole edited map, Euclidean pixel distance of that argmax to the target.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dragbench.sample import rc_to_xy, xy_to_rc

MD_VARIANTS = ("standard", "masked", "normalised")
"""standard: the official MD. masked: m-MD (argmax restricted to the editable mask, as in DragLoRA).
normalised: distance × 100 / max(H, W) (percent of the longer image side; = ×100/768 on 768² images)."""

NORMALISED_SCALE = 100.0  # normalised MD is a percentage of the image's longer side (protocol §3 variants)
_CHANNEL_CHUNK = 64  # channels upsampled at once: bounds memory at 64 × H × W floats per map


def _round_clip_rc(points_xy: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """(N, 2) float (x, y) -> (N, 2) int64 (row, col), rounded to the nearest pixel and clipped inside."""
    rc = np.rint(xy_to_rc(np.asarray(points_xy, dtype=np.float64))).astype(np.int64)  # (N, 2) row, col
    rc[:, 0] = rc[:, 0].clip(0, size_hw[0] - 1)
    rc[:, 1] = rc[:, 1].clip(0, size_hw[1] - 1)
    return rc


def _upsample(feat: Tensor, size_hw: tuple[int, int]) -> Tensor:
    """(c, h, w) -> (c, H, W) bilinear, align_corners=False; a map already at (H, W) is returned as is
    (bilinear resampling at scale 1 is the identity)."""
    if tuple(feat.shape[1:]) == tuple(size_hw):
        return feat
    return F.interpolate(feat[None], size=size_hw, mode="bilinear")[0]  # (c, H, W)


def cosine_match_maps(
    feat_orig: Tensor, feat_edit: Tensor, handles_rc: Tensor, size_hw: tuple[int, int]
) -> Tensor:
    """Cosine similarity between the original's upsampled feature at each handle and every edited pixel.

    Both maps are upsampled bilinearly (align_corners=False, as `F.interpolate`'s default in the official
    script) to `size_hw`; the work is done in channel chunks so a 1280-channel map never needs to exist at
    full resolution at once. The result equals `nn.CosineSimilarity(dim=1)` on the full upsampled maps.

    Args:
        feat_orig: (C, h, w) features of the original image.
        feat_edit: (C, h', w') features of the edited image (same C, any grid).
        handles_rc: (N, 2) int64 (row, col) pixels in `size_hw`.
        size_hw: (H, W) image size the maps are upsampled to.

    Returns:
        (N, H, W) cosine similarities.
    """
    if feat_orig.shape[0] != feat_edit.shape[0]:
        shapes = f"original {tuple(feat_orig.shape)} vs edited {tuple(feat_edit.shape)}"
        raise ValueError(f"feature channel mismatch: {shapes}")
    n, (h, w) = handles_rc.shape[0], size_hw
    dot = feat_edit.new_zeros((n, h, w))
    sq_edit = feat_edit.new_zeros((h, w))
    sq_src = feat_edit.new_zeros((n, 1, 1))
    rows, cols = handles_rc[:, 0].to(feat_orig.device), handles_rc[:, 1].to(feat_orig.device)
    for c0 in range(0, feat_orig.shape[0], _CHANNEL_CHUNK):
        up_o = _upsample(feat_orig[c0 : c0 + _CHANNEL_CHUNK], (h, w))  # (c, H, W)
        up_e = _upsample(feat_edit[c0 : c0 + _CHANNEL_CHUNK], (h, w))  # (c, H, W)
        src = up_o[:, rows, cols].T.to(feat_edit.device)  # (N, c): original feature at each handle
        dot += torch.einsum("nc,chw->nhw", src, up_e)  # (N, H, W)
        sq_edit += up_e.square().sum(0)  # (H, W)
        sq_src += src.square().sum(1)[:, None, None]  # (N, 1, 1)
    eps = torch.finfo(dot.dtype).eps  # nn.CosineSimilarity's default eps is 1e-8; any tiny floor will do
    return dot / (sq_src.sqrt() * sq_edit.sqrt()[None]).clamp_min(eps)


def mean_distance(
    feat_orig: Tensor,
    feat_edit: Tensor,
    handles_xy: np.ndarray,
    targets_xy: np.ndarray,
    size_hw: tuple[int, int],
    variant: str = "standard",
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pair distance between where the handle's feature is found in the edited image and the target.

    Points cross this boundary as (x, y) image pixels; inside they are (row, col). The handle is rounded to
    the nearest pixel (DragBench stores integer points, which the official script indexes directly) and
    clipped into the image; the target is used as given.

    Args:
        feat_orig: (C, h, w) features of the original image.
        feat_edit: (C, h', w') features of the edited image, already resized to the original's size.
        handles_xy: (N, 2) float (x, y) handle pixels in the original image.
        targets_xy: (N, 2) float (x, y) target pixels.
        size_hw: (H, W) of the original image.
        variant: "standard" (official MD), "masked" (m-MD: argmax only inside `mask`) or "normalised"
            (distance × 100 / max(H, W)).
        mask: bool (H, W), True = editable; required for "masked".

    Returns:
        distances: (N,) float64 (pixels; percent of max(H, W) for "normalised").
        matched_xy: (N, 2) float64 (x, y) pixel of the cosine argmax in the edited image.

    Raises:
        ValueError: unknown variant, missing/empty/mis-sized mask for "masked", or bad point shapes.
    """
    if variant not in MD_VARIANTS:
        raise ValueError(f"unknown MD variant {variant!r}; choose one of {', '.join(MD_VARIANTS)}")
    handles_xy, targets_xy = np.asarray(handles_xy, np.float64), np.asarray(targets_xy, np.float64)
    if handles_xy.ndim != 2 or handles_xy.shape[1] != 2 or handles_xy.shape != targets_xy.shape:
        shapes = f"{handles_xy.shape}, {targets_xy.shape}"
        raise ValueError(f"handles/targets must both be (N, 2) x,y; got {shapes}")
    h, w = int(size_hw[0]), int(size_hw[1])
    handles_rc = torch.from_numpy(_round_clip_rc(handles_xy, (h, w)))  # (N, 2) row, col
    cos = cosine_match_maps(feat_orig, feat_edit, handles_rc, (h, w))  # (N, H, W)
    if variant == "masked":
        allowed = _check_mask(mask, (h, w))
        cos = cos.masked_fill(~torch.from_numpy(allowed).to(cos.device)[None], -torch.inf)
    flat = cos.reshape(cos.shape[0], -1).argmax(dim=1).cpu().numpy()  # (N,) first maximum, row-major
    matched_rc = np.stack([flat // w, flat % w], axis=1).astype(np.float64)  # (N, 2) row, col
    distances = np.linalg.norm(matched_rc - xy_to_rc(targets_xy), axis=1)  # (N,)
    if variant == "normalised":
        distances = distances * NORMALISED_SCALE / max(h, w)
    return distances, rc_to_xy(matched_rc)


def _check_mask(mask: np.ndarray | None, size_hw: tuple[int, int]) -> np.ndarray:
    if mask is None:
        raise ValueError("MD variant 'masked' needs the sample's editable mask; got mask=None")
    mask = np.asarray(mask).astype(bool)
    if mask.shape != tuple(size_hw):
        raise ValueError(f"mask shape {mask.shape} does not match the image size {tuple(size_hw)}")
    if not mask.any():
        raise ValueError("MD variant 'masked' is undefined for an empty mask; use variant='standard'")
    return mask
