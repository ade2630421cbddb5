"""GoodDrag's information-preserving motion supervision (GoodDrag §3.3; protocol §7).

DragDiffusion compares the features around the *current* handle with the same patch moved one step towards
the target, so errors accumulate as the handle drifts. GoodDrag keeps the target patch fixed: it is always the
original trajectory's features F0(t) around the *initial* handle. The moved patch is sampled bilinearly from
the current features at handle + d, with |d| = min(beta, remaining distance) (a step of up to beta cells, not
1), and the term is weighted by (2 r1)^2 (the official code's factor, not (2 r1 + 1)^2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dragbench.diffusion.motion_supervision import sample_shifted_patch


def patch_window(center_rc: torch.Tensor, radius: int) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1) of the (2 radius + 1)^2 patch around an integer-valued (row, col), not clipped.

    `sample_shifted_patch` clamps indices outside the grid to the border; the official code would slice a
    smaller patch there (and fail on the shape mismatch), so only patches near the border differ.
    """
    row, col = int(center_rc[0]), int(center_rc[1])
    return row - radius, row + radius + 1, col - radius, col + radius + 1


def information_preserving_loss(
    feats: torch.Tensor,
    feats_ref: torch.Tensor,
    handles_rc: torch.Tensor,
    handles_init_rc: torch.Tensor,
    targets_rc: torch.Tensor,
    r1: int,
    beta: float,
    skip_distance: float = 2.0,
) -> torch.Tensor | float:
    """Sum over pairs of (2 r1)^2 * mean |sg(F0[patch at initial handle]) - F[patch at handle + d]|.

    Args:
        feats: (1, C, h, w) current features F1 at timestep t (with gradients).
        feats_ref: (1, C, h, w) the original (undragged) trajectory's features F0(t) at the same timestep.
        handles_rc: (N, 2) current handles (row, col), integer-valued.
        handles_init_rc: (N, 2) initial handles (row, col): where the fixed target patch is read from F0(t).
        targets_rc: (N, 2) targets (row, col).
        r1: patch radius in grid cells (GoodDrag bench: 4).
        beta: largest step d in grid cells (GoodDrag bench `d`: 4).
        skip_distance: pairs closer than this to their target contribute nothing (2, as the official code).

    Returns:
        scalar tensor, or the float 0.0 when every pair was skipped (the official "drag loss").
    """
    factor = (2 * r1) ** 2
    loss: torch.Tensor | float = 0.0
    zero = torch.zeros(2, device=feats.device)
    for handle, handle_init, target in zip(handles_rc, handles_init_rc, targets_rc, strict=True):
        distance = (target - handle).norm()
        if distance < skip_distance:
            continue
        step = (target - handle) / distance * torch.clamp(distance, max=beta)  # (2,) (d_row, d_col)
        # fixed target patch: integer cells of F0(t) around the initial handle (a zero shift reads them exactly)
        reference = sample_shifted_patch(feats_ref, patch_window(handle_init, r1), zero).detach()
        moved = sample_shifted_patch(feats, patch_window(handle, r1), step.to(feats.device))
        loss = loss + factor * F.l1_loss(reference, moved)
    return loss
