"""FastDrag's one-step latent warp (Zhao et al., NeurIPS 2024, §3.2 "latent warpage"; protocol §9).

Every latent pixel of the editable region moves once, by an inverse-distance-weighted sum of the handle
moves, each scaled by a stretch factor from the mask's circumscribed circle; the first pixel (row-major
order) to land on a position wins; region pixels nobody lands on are left at zero (holes, filled by
`hole_filling.fill_holes`). Behaviour read in the official code (XuanjiaZ/FastDrag def3c4e,
`utils/continuous_drag.py` and `utils/ui_utils.py::run_drag`) and reproduced here as tensor operations
(the official code loops over pixels in Python); tests/data/official_fastdrag_ref/README.md lists the facts.

Coordinates are (row, col) on the latent grid throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Official constants: the radius uses torch's PairwiseDistance (which adds eps=1e-6 to the difference) and the
# inverse-distance weights are 1 / (|C - A| + 1e-4).
CIRCLE_EPS = 1e-6
WEIGHT_EPS = 1e-4


@dataclass
class WarpResult:
    """The warped latent and where it has holes.

    Attributes:
        latent: (1, C, h, w) the warped latent, zero at the holes.
        holes: (h, w) bool, region pixels no source pixel landed on.
        destinations: (P, 2) int64 (row, col) each region pixel (row-major order) moves to; -1 where its
            move is not finite (a pixel exactly on a handle: the official loop skips it).
        written: (P,) bool, the pixel won its destination (first write wins).
    """

    latent: torch.Tensor
    holes: torch.Tensor
    destinations: torch.Tensor
    written: torch.Tensor


def region_on_latent(mask: np.ndarray, latent_hw: tuple[int, int]) -> torch.Tensor:
    """The editable region on the latent grid, (h, w) bool, as the official bench path computes it.

    Official: the 0/1 (or 0/255) mask is resized nearest to the supervision grid (int(H/2), int(W/2)), then
    bilinearly (no antialias: torchvision 0.15's tensor default) to a quarter of that, and every value > 0
    counts. For SD's 8x VAE that quarter, floor(floor(H/2)/4) = floor(H/8), is the latent size for every H
    (341 -> 42), so the second resize goes to `latent_hw` (which also serves VAEs with other factors).
    """
    m = torch.tensor(np.asarray(mask), dtype=torch.float32)[None, None]  # (1, 1, H, W)
    m = (m > 0).float()
    grid = (int(0.5 * m.shape[-2]), int(0.5 * m.shape[-1]))
    m = F.interpolate(m, grid, mode="nearest")
    m = F.interpolate(m, tuple(latent_hw), mode="bilinear", align_corners=False, antialias=False)
    return m[0, 0] > 0


def points_on_latent(points_xy: np.ndarray, image_hw: tuple[int, int], vae_scale_factor: int = 8) -> torch.Tensor:
    """(N, 2) image (x, y) -> (N, 2) float32 latent (row, col), as official: round on the half-resolution
    grid (half to even), then divide by vae_scale_factor / 2 (4 for SD; not rounded again)."""
    height, width = image_hw
    grid_h, grid_w = int(0.5 * height), int(0.5 * width)
    pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    rc = np.stack([pts[:, 1] / height * grid_h, pts[:, 0] / width * grid_w], axis=1)
    return torch.round(torch.tensor(rc, dtype=torch.float32)) / (vae_scale_factor / 2)


def circumscribed_circle(region: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre (2,) and radius () of the circle through the corners of the region's bounding box."""
    rc = torch.nonzero(region).float()  # (P, 2)
    lo, hi = rc.min(dim=0).values, rc.max(dim=0).values
    centre = (lo + hi) / 2
    radius = torch.linalg.vector_norm(centre - lo + CIRCLE_EPS)
    return centre, radius


def stretch_factors(
    pixels: torch.Tensor, handle: torch.Tensor, centre: torch.Tensor, radius: torch.Tensor
) -> torch.Tensor:
    """|PC| / |AP| per pixel C, with A the handle and P where the ray from A through C leaves the circle.

    A pixel at the handle moves by the whole handle move scaled by 1 and one on the circle by 0 (the paper's
    "stretch": content between handle and boundary is compressed or stretched). NaN for C == A.

    Args:
        pixels: (P, 2) float32 region pixels C.
        handle: (2,) handle A.
        centre, radius: the circumscribed circle.
    """
    ac = pixels - handle  # (P, 2)
    oa = handle - centre
    d_ac = torch.linalg.vector_norm(ac, dim=1)  # (P,)
    e_ac = ac / d_ac[:, None]
    l0 = (ac @ oa) / d_ac  # projection of OA on the ray
    l1 = torch.sqrt(radius**2 - torch.linalg.vector_norm(oa) ** 2 + l0**2)
    ap = (l1 - l0)[:, None] * e_ac  # A -> P on the circle
    pc = ac - ap
    return torch.linalg.vector_norm(pc, dim=1) / torch.linalg.vector_norm(ap, dim=1)


def pixel_moves(
    region: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Region pixels (P, 2) int64 in row-major order and their moves (P, 2) float32.

    Move of C = sum_n w_n(C) * s_n(C) * (B_n - A_n), w_n = normalised 1 / (|C - A_n| + 1e-4).
    """
    pixels = torch.nonzero(region)  # (P, 2), row-major as the official loop
    c = pixels.float()
    centre, radius = circumscribed_circle(region)
    handles, targets = handles.float(), targets.float()
    scales = torch.stack([stretch_factors(c, a, centre, radius) for a in handles], dim=1)  # (P, N)
    shifts = targets - handles  # (N, 2)
    inv_dist = 1 / (torch.linalg.vector_norm(c[:, None, :] - handles[None], dim=2) + WEIGHT_EPS)  # (P, N)
    weights = inv_dist / inv_dist.sum(dim=1, keepdim=True)
    moves = (weights[:, :, None] * (scales[:, :, None] * shifts[None])).sum(dim=1)  # (P, 2), official order
    return pixels, moves


def warp_latent(
    latent: torch.Tensor, region: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor
) -> WarpResult:
    """Move the region's latent pixels once (first write wins, vacated pixels zero).

    Args:
        latent: (1, C, h, w) the inverted latent.
        region: (h, w) bool editable region (`region_on_latent`); must not be empty.
        handles, targets: (N, 2) latent (row, col), `points_on_latent`.

    Raises:
        ValueError: an empty region (FastDrag moves only region pixels).
    """
    if not bool(region.any()):
        raise ValueError("FastDrag needs a non-empty mask (the region it warps): draw the editable region")
    h, w = region.shape
    region = region.to(latent.device)
    pixels, moves = pixel_moves(region, handles.to(latent.device), targets.to(latent.device))
    finite = torch.isfinite(moves).all(dim=1)
    dest = torch.round(pixels.float() + torch.where(finite[:, None], moves, 0.0)).long()
    dest[:, 0].clamp_(0, h - 1)  # official: positions beyond the latent land on its border
    dest[:, 1].clamp_(0, w - 1)
    flat = dest[:, 0] * w + dest[:, 1]
    order = torch.arange(len(pixels), device=latent.device)
    big = len(pixels)
    first = torch.full((h * w,), big, dtype=torch.long, device=latent.device)
    first.scatter_reduce_(0, flat[finite], order[finite], reduce="amin")  # earliest pixel per destination
    written = finite & (first[flat] == order)
    out = latent.clone()
    out[:, :, region] = 0
    src = pixels[written]
    out[:, :, dest[written, 0], dest[written, 1]] = latent[:, :, src[:, 0], src[:, 1]]
    landed = torch.zeros(h * w, dtype=torch.bool, device=latent.device)
    landed[flat[written]] = True
    holes = region & ~landed.view(h, w)
    dest[~finite] = -1
    return WarpResult(latent=out, holes=holes, destinations=dest, written=written)
