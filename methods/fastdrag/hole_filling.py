"""FastDrag's hole filling after the latent warp (protocol §9), as one triangular linear solve.

The official `interpolation` (XuanjiaZ/FastDrag def3c4e, `utils/continuous_drag.py`) visits the holes in
row-major order and sets each to the average of the nearest non-zero pixel to its left, right, above and below,
weighted 1/k for a neighbour k pixels away, writing in place: a hole filled earlier counts as non-zero for the
holes after it. So the pixel to the left and the one above are always the neighbours at k = 1 (either not a
hole, or a hole filled before), while to the right and below the nearest pixels that were never holes count.
That makes every hole a weighted average of known pixels and of earlier holes: a lower-triangular linear
system in row-major order, solved here at once instead of with Python loops over pixels.
"""

from __future__ import annotations

import torch


def _next_known(known: torch.Tensor, dim: int) -> torch.Tensor:
    """Index of the nearest known pixel strictly after each position along `dim` (size along `dim` if none)."""
    size = known.shape[dim]
    index = torch.arange(size, device=known.device)
    index = index.view(-1, 1) if dim == 0 else index.view(1, -1)
    candidate = torch.where(known, index.expand_as(known), size)
    suffix_min = torch.flip(torch.cummin(torch.flip(candidate, [dim]), dim=dim).values, [dim])  # over [j, end)
    pad = torch.full_like(suffix_min.narrow(dim, 0, 1), size)
    return torch.cat([suffix_min.narrow(dim, 1, size - 1), pad], dim=dim)  # over (j, end)


def fill_holes(latent: torch.Tensor, holes: torch.Tensor) -> torch.Tensor:
    """Fill `holes` of a (1, C, h, w) latent as the official `interpolation` does (see module docstring).

    Args:
        latent: (1, C, h, w), any values at the holes (they are not read).
        holes: (h, w) bool.

    Returns:
        (1, C, h, w) with the holes filled; other pixels unchanged.

    Raises:
        ValueError: the first hole in row-major order has no non-hole pixel in its row or column (the
            official code would leave it at zero and fill its successors differently).
    """
    if latent.dim() != 4 or latent.shape[0] != 1:
        raise ValueError(f"latent must be (1, C, h, w), got {tuple(latent.shape)}")
    holes = holes.to(latent.device)
    n = int(holes.sum())
    out = latent.clone()
    if n == 0:
        return out
    h, w = holes.shape
    known = ~holes
    ids = torch.full((h, w), -1, dtype=torch.long, device=latent.device)
    ids[holes] = torch.arange(n, device=latent.device)
    r, c = torch.nonzero(holes, as_tuple=True)  # row-major, the official visiting order
    values = latent[0].permute(1, 2, 0).double()  # (h, w, C)

    right = _next_known(known, 1)[r, c]
    down = _next_known(known, 0)[r, c]
    has_left, has_up = c > 0, r > 0
    has_right, has_down = right < w, down < h
    w_right = torch.where(has_right, 1.0 / (right - c).double(), 0.0)
    w_down = torch.where(has_down, 1.0 / (down - r).double(), 0.0)
    total = has_left.double() + has_up.double() + w_right + w_down  # (n,)
    if bool((total == 0).any()):
        raise ValueError(
            "hole filling: the first hole has no non-hole pixel in its row or column (the whole first row and "
            "column were vacated); use a smaller mask"
        )

    system = torch.diag(total)  # row p: total_p * x_p - sum(unknown neighbours) = sum(known contributions)
    rhs = torch.zeros(n, values.shape[-1], dtype=torch.float64, device=latent.device)
    rhs += w_right[:, None] * values[r, right.clamp(max=w - 1)]
    rhs += w_down[:, None] * values[down.clamp(max=h - 1), c]
    for exists, nr, nc in ((has_left, r, c - 1), (has_up, r - 1, c)):
        nr, nc = nr.clamp(min=0), nc.clamp(min=0)
        neighbour_id = ids[nr, nc]
        unknown = exists & (neighbour_id >= 0)
        rhs += (exists & ~unknown).double()[:, None] * values[nr, nc]
        rows = torch.nonzero(unknown).squeeze(1)
        system[rows, neighbour_id[rows]] -= 1.0  # an earlier hole (row-major), so lower-triangular
    filled = torch.linalg.solve_triangular(system, rhs, upper=False)  # (n, C)
    out[0, :, r, c] = filled.T.to(latent.dtype)
    return out
