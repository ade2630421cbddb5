"""DragDiffusion point tracking and the stop rule (protocol §2 "point tracking", "stopping").

Nearest neighbour, in L1 over channels, to the initial handle's feature in the original latent's
feature map, searched in a (2 r2 + 1)^2 window around the current handle clipped at the grid borders.
"""

from __future__ import annotations

import torch


def clipped_window(center_rc: torch.Tensor | tuple[float, float], radius: int,
                   grid_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Square window of `radius` around an integer-valued (row, col), clipped to the grid (not padded).

    The centre is truncated with `int()` as the official code does.

    Returns:
        (r0, r1, c0, c1): rows r0..r1-1 and cols c0..c1-1.
    """
    row, col = int(center_rc[0]), int(center_rc[1])
    r0, r1 = max(0, row - radius), min(grid_hw[0], row + radius + 1)
    c0, c1 = max(0, col - radius), min(grid_hw[1], col + radius + 1)
    return r0, r1, c0, c1


def track_points(feats: torch.Tensor, feats0: torch.Tensor, handles_rc: torch.Tensor,
                 handles_init_rc: torch.Tensor, r2: int) -> torch.Tensor:
    """Move each handle to its best match in a window around it (all handles at once, on the device).

    Args:
        feats: (1, C, h, w) current feature map F1.
        feats0: (1, C, h, w) feature map F0 of the original latent.
        handles_rc: (N, 2) current handles (row, col), integer-valued.
        handles_init_rc: (N, 2) initial handles (row, col): the reference feature is F0 there.
        r2: search radius in grid pixels (window (2 r2 + 1)^2, clipped at the borders).

    Returns:
        (N, 2) new handles (row, col), same dtype as `handles_rc`; first minimum in row-major order on ties.
    """
    h, w = feats.shape[-2], feats.shape[-1]
    k = 2 * r2 + 1
    with torch.no_grad():
        init = handles_init_rc.detach().long()  # (N, 2); truncation as int() for points inside the grid
        cur = handles_rc.detach().long()  # (N, 2)
        ref = feats0[0][:, init[:, 0], init[:, 1]]  # (C, N)
        offsets = torch.arange(-r2, r2 + 1, device=feats.device)  # (K,)
        rows, cols = cur[:, :1] + offsets, cur[:, 1:] + offsets  # (N, K) each
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]  # (N, K, K)
        r_idx, c_idx = rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]  # (N,K,1), (N,1,K)
        window = feats[0][:, r_idx, c_idx]  # (C, N, K, K)
        dist = (ref[:, :, None, None] - window).abs().sum(dim=0)  # (N, K, K)
        dist = dist.masked_fill(~inside, float("inf"))  # outside the grid = outside the clipped window
        best = dist.flatten(1).argmin(dim=1)  # (N,) first minimum in row-major order, as the clipped window
        new_rows = rows.gather(1, (best // k)[:, None])[:, 0]  # (N,)
        new_cols = cols.gather(1, (best % k)[:, None])[:, 0]  # (N,)
    return torch.stack([new_rows, new_cols], dim=1).to(handles_rc.dtype)


def pair_distances(handles_rc: torch.Tensor, targets_rc: torch.Tensor) -> torch.Tensor:
    """(N,) Euclidean distances handle -> target in grid pixels."""
    return (targets_rc - handles_rc).norm(dim=-1)


def all_reached(handles_rc: torch.Tensor, targets_rc: torch.Tensor, stop_distance: float) -> bool:
    """True when every handle is strictly closer than `stop_distance` to its target."""
    return bool((pair_distances(handles_rc, targets_rc) < stop_distance).all())


class NearestNeighbourTracker:
    """DragDiffusion's point tracker (the drag loop's default): `track_points` with search radius `radius`.

    Args:
        radius: r2, the search radius in grid pixels (protocol §2: 3).
    """

    def __init__(self, radius: int = 3) -> None:
        if radius < 0:
            raise ValueError(f"tracking radius must be >= 0, got {radius}")
        self.radius = radius

    def __call__(self, feats: torch.Tensor, feats0: torch.Tensor, handles_rc: torch.Tensor,
                 handles_init_rc: torch.Tensor) -> torch.Tensor:
        return track_points(feats, feats0, handles_rc, handles_init_rc, self.radius)
