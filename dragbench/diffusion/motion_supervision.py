"""DragDiffusion motion supervision (protocol §2 "motion supervision"; official-ref README "Drag loop").

For each pair still >= 2 grid px from its target: L1 between the detached features of the (2 r1 + 1)^2 patch
around the handle and the same patch shifted by the unit direction to the target, bilinearly sampled from the
current features, times the fixed factor (2 r1 + 1)^2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dragbench.diffusion.point_tracking import clipped_window


def _clamped_range(start: torch.Tensor, length: int, size: int) -> torch.Tensor:
    """Integer indices start..start+length-1, clamped to [0, size-1] (border replicate)."""
    return (start + torch.arange(length, device=start.device)).clamp(0, size - 1)


def sample_shifted_patch(feats: torch.Tensor, window: tuple[int, int, int, int],
                         shift_rc: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample the patch `window` shifted by a sub-pixel (d_row, d_col), with gradients.

    The four neighbouring integer patches start at floor(start + shift) and one further down/right;
    their weights are the products of the fractional distances (the official formula). Indices that
    fall outside the grid are clamped to the border (the official code has no such case handled).

    Args:
        feats: (B, C, h, w) features.
        window: (r0, r1, c0, c1) integer patch, rows r0..r1-1, cols c0..c1-1.
        shift_rc: (2,) float shift (rows, cols), |shift| <= 1 in practice.

    Returns:
        (B, C, r1 - r0, c1 - c0) sampled patch.
    """
    r0, r1, c0, c1 = window
    h, w = feats.shape[-2:]
    y = r0 + shift_rc[0]
    x = c0 + shift_rc[1]
    y_floor, x_floor = torch.floor(y).long(), torch.floor(x).long()
    y_cell, x_cell = y_floor + 1, x_floor + 1
    wa = (x_cell.float() - x) * (y_cell.float() - y)
    wb = (x_cell.float() - x) * (y - y_floor.float())
    wc = (x - x_floor.float()) * (y_cell.float() - y)
    wd = (x - x_floor.float()) * (y - y_floor.float())

    def patch(row_start: torch.Tensor, col_start: torch.Tensor) -> torch.Tensor:
        rows = _clamped_range(row_start, r1 - r0, h)
        cols = _clamped_range(col_start, c1 - c0, w)
        return feats.index_select(-2, rows).index_select(-1, cols)  # (B, C, r1-r0, c1-c0)

    ia, ib = patch(y_floor, x_floor), patch(y_cell, x_floor)
    ic, id_ = patch(y_floor, x_cell), patch(y_cell, x_cell)
    return ia * wa + ib * wb + ic * wc + id_ * wd


def motion_supervision_loss(feats: torch.Tensor, handles_rc: torch.Tensor, targets_rc: torch.Tensor,
                            r1: int, skip_distance: float = 2.0) -> torch.Tensor | float:
    """Sum over pairs of (2 r1 + 1)^2 * mean |sg(F[patch]) - F[patch + d]|.

    Args:
        feats: (1, C, h, w) current features F1 (with gradients).
        handles_rc: (N, 2) current handles (row, col), integer-valued, float32.
        targets_rc: (N, 2) targets (row, col).
        r1: patch radius in grid pixels; the factor (2 r1 + 1)^2 is fixed even for clipped patches.
        skip_distance: pairs closer than this (grid px) contribute nothing.

    Returns:
        scalar tensor, or the float 0.0 when every pair was skipped.
    """
    grid_hw = (feats.shape[-2], feats.shape[-1])
    factor = (2 * r1 + 1) ** 2
    loss: torch.Tensor | float = 0.0
    # one host copy per call: (row, col, distance to target) of every handle, for the skips and windows
    host = torch.cat([handles_rc, (targets_rc - handles_rc).norm(dim=-1, keepdim=True)], dim=1).tolist()
    for handle, target, (row, col, distance) in zip(handles_rc, targets_rc, host, strict=True):
        if distance < skip_distance:
            continue
        direction = (target - handle) / (target - handle).norm()  # (2,) unit (d_row, d_col)
        window = clipped_window((row, col), r1, grid_hw)
        r0, r1_, c0, c1 = window
        reference = feats[:, :, r0:r1_, c0:c1].detach()
        moved = sample_shifted_patch(feats, window, direction.to(feats.device))
        loss = loss + factor * F.l1_loss(reference, moved)
    return loss


class PatchMotionSupervision:
    """DragDiffusion's motion-supervision loss (the drag loop's default): `motion_supervision_loss`.

    Args:
        radius: r1, the patch radius in grid pixels (protocol §2: 1).
        skip_distance: pairs closer than this (grid px) contribute nothing (the loop's stop distance).
    """

    def __init__(self, radius: int = 1, skip_distance: float = 2.0) -> None:
        if radius < 0:
            raise ValueError(f"patch radius must be >= 0, got {radius}")
        self.radius = radius
        self.skip_distance = skip_distance

    def __call__(self, feats: torch.Tensor, handles_rc: torch.Tensor,
                 targets_rc: torch.Tensor) -> torch.Tensor | float:
        return motion_supervision_loss(feats, handles_rc, targets_rc, self.radius, self.skip_distance)
