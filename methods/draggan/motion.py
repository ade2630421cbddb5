"""DragGAN motion supervision, mask term and point tracking as pure tensor functions (protocol §5, DragGAN §3.2).

Points are (row, col) in feature-map pixels here; features are (1, C, H, W) already resized to image size.
Radii are given for a 512-px generator and scaled by resolution / 512 (at least 1), like the official code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

RADIUS_REFERENCE = 512  # r1, r2 and the stop distance are defined for 512-px images (DragGAN code)
STOP_DISTANCE = 2.0  # px at 512, and the floor: stop when every handle is within max(2 * res / 512, 2)
MIN_STEP_DISTANCE = 1.0  # a pair closer than this contributes no motion loss (official renderer)


def scaled_radius(radius: float, resolution: int, reference: int = RADIUS_REFERENCE) -> int:
    """`radius` defined at `reference` px, scaled to `resolution` and rounded, at least 1."""
    return max(1, round(radius * resolution / reference))


def stop_distance(resolution: int, reference: int = RADIUS_REFERENCE) -> float:
    """Distance (px) under which a handle counts as arrived: max(2 * res / 512, 2)."""
    return max(STOP_DISTANCE * resolution / reference, STOP_DISTANCE)


def disc_offsets(radius: int) -> Tensor:
    """Integer (d_row, d_col) offsets with Euclidean norm strictly below `radius`. Returns (K, 2) long."""
    r = torch.arange(-radius, radius + 1)
    dr, dc = torch.meshgrid(r, r, indexing="ij")  # (2r+1, 2r+1) each
    keep = (dr.square() + dc.square()).float().sqrt() < radius
    return torch.stack([dr[keep], dc[keep]], dim=1)  # (K, 2)


def sample_bilinear(feats: Tensor, points_rc: Tensor) -> Tensor:
    """Bilinearly sample (1, C, H, W) features at float (K, 2) (row, col) points. Returns (C, K)."""
    _, _, h, w = feats.shape
    gx = points_rc[:, 1] / (w - 1) * 2 - 1  # align_corners=True: pixel centres at integer coordinates
    gy = points_rc[:, 0] / (h - 1) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1).reshape(1, 1, -1, 2)  # (1, 1, K, 2) as (x, y)
    out = F.grid_sample(feats, grid.to(feats.dtype), mode="bilinear", align_corners=True)  # (1, C, 1, K)
    return out[0, :, 0]


def motion_supervision_loss(feats: Tensor, handles_rc: Tensor, targets_rc: Tensor, r1: int) -> Tensor:
    """DragGAN motion supervision: sum over pairs of L1(sg(F(q)), F(q + d)) over a disc of radius r1.

    Args:
        feats: (1, C, H, W) current features (with grad), image resolution.
        handles_rc: (N, 2) current handle points (row, col); rounded to the pixel grid.
        targets_rc: (N, 2) targets (row, col).
        r1: disc radius in feature pixels (already scaled).

    Returns:
        Scalar loss (0 if every pair is within MIN_STEP_DISTANCE of its target).
    """
    _, _, h, w = feats.shape
    offsets = disc_offsets(r1).to(feats.device)
    loss = feats.new_zeros(())
    for handle, target in zip(handles_rc.round().long(), targets_rc.to(feats.dtype), strict=True):
        direction = target - handle.to(feats.dtype)
        dist = torch.linalg.vector_norm(direction)
        if dist <= MIN_STEP_DISTANCE:
            continue
        q = handle[None] + offsets  # (K, 2)
        inside = (q[:, 0] >= 0) & (q[:, 0] < h) & (q[:, 1] >= 0) & (q[:, 1] < w)
        q = q[inside]
        d = direction / (dist + 1e-7)
        shifted = sample_bilinear(feats, q.to(feats.dtype) + d)  # (C, K)
        loss = loss + F.l1_loss(feats[0, :, q[:, 0], q[:, 1]].detach(), shifted)
    return loss


def mask_loss(feats: Tensor, feats0: Tensor, fixed: Tensor) -> Tensor:
    """L1 (mean over all elements) between current and initial features where `fixed` is 1.

    Args:
        feats: (1, C, H, W) current features; feats0: same shape, initial features (no grad needed).
        fixed: (H, W) float/bool, 1 = outside the editable region.

    Returns:
        Scalar; 0 when `fixed` is all 0 or all 1 (the official code only applies a mixed mask).
    """
    fixed = fixed.to(feats.dtype)
    if fixed.min() == fixed.max():
        return feats.new_zeros(())
    m = fixed[None, None]  # (1, 1, H, W)
    return F.l1_loss(feats * m, feats0.detach() * m)


def track_points(feats: Tensor, ref_feats: Tensor, handles_rc: Tensor, r2: int) -> Tensor:
    """Nearest-neighbour tracking: move each handle to the L2-closest feature in its (2*r2+1)^2 window.

    Args:
        feats: (1, C, H, W) current features.
        ref_feats: (N, C) features of the initial handles in the initial feature map.
        handles_rc: (N, 2) current handles (row, col), rounded to the grid.
        r2: half-width of the square search window (clipped at borders).

    Returns:
        (N, 2) long new handle positions (row, col); ties go to the first in row-major order.
    """
    _, _, h, w = feats.shape
    out = []
    for handle, ref in zip(handles_rc.round().long(), ref_feats, strict=True):
        top, bottom = max(int(handle[0]) - r2, 0), min(int(handle[0]) + r2 + 1, h)
        left, right = max(int(handle[1]) - r2, 0), min(int(handle[1]) + r2 + 1, w)
        patch = feats[0, :, top:bottom, left:right]  # (C, h', w')
        dist = torch.linalg.vector_norm(patch - ref[:, None, None], dim=0)  # (h', w')
        idx = int(torch.argmin(dist.reshape(-1)))
        out.append([top + idx // (right - left), left + idx % (right - left)])
    return torch.tensor(out, dtype=torch.long, device=feats.device).reshape(-1, 2)


def all_reached(handles_rc: Tensor, targets_rc: Tensor, threshold: float) -> bool:
    """True when every handle is within `threshold` px (Euclidean) of its target."""
    d = torch.linalg.vector_norm(handles_rc.float() - targets_rc.float(), dim=1)
    return bool((d <= threshold).all())


def pair_distances(handles_rc: Tensor, targets_rc: Tensor) -> list[float]:
    """Euclidean distances per pair, as Python floats (for logging)."""
    d = torch.linalg.vector_norm(handles_rc.float() - targets_rc.float(), dim=1)
    return [float(x) if math.isfinite(float(x)) else float("nan") for x in d]
