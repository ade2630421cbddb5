"""DragDiffusion's mask term (protocol §2 "mask term"): keep the region outside the editable mask unchanged.

lam * sum |(x_prev - sg(x_prev_0)) * (1 - M)|, measured one DDIM step below the drag timestep.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mask_to_latent(mask: torch.Tensor, grid_hw: tuple[int, int], latent_hw: tuple[int, int]) -> torch.Tensor:
    """Editable mask (H, W) -> (1, 1, h, w) float {0, 1} on the latent grid.

    As the official code: nearest ("nearest", not "nearest-exact") to the supervision grid, then from
    there nearest to the latent size.

    Args:
        mask: (H, W) bool or numbers; nonzero = editable.
        grid_hw: supervision grid (h, w).
        latent_hw: latent (h, w).
    """
    m = (mask != 0).float()[None, None]  # (1, 1, H, W)
    m = F.interpolate(m, grid_hw, mode="nearest")  # (1, 1, grid_h, grid_w)
    return F.interpolate(m, latent_hw, mode="nearest")  # (1, 1, lat_h, lat_w)


def mask_term(x_prev: torch.Tensor, x_prev0: torch.Tensor, mask_latent: torch.Tensor,
              lam: float) -> torch.Tensor:
    """lam * sum over channels and positions of |(x_prev - x_prev0) * (1 - mask)|.

    Args:
        x_prev: (1, 4, h, w) one DDIM step below t from the current latent (with gradients).
        x_prev0: (1, 4, h, w) the same from the original latent (no gradients).
        mask_latent: (1, 1, h, w) 1 = editable.
        lam: weight (0.1 in protocol §2).
    """
    return lam * ((x_prev - x_prev0) * (1.0 - mask_latent)).abs().sum()
