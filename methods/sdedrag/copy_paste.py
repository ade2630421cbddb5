"""SDE-Drag's edit at x_{t0} (paper §4.2; official `sdedrag_dragbench.py` / `utils/drag.py`, 881364a).

The drag is cut into chunks of about `step_size` latent pixels (`drag_chunks`); in each, a square latent
patch around every source point is pasted at its target, scaled by α, and the source patch is replaced by
β·source + sqrt(1 - β²)·noise (`copy_and_paste`). Points here are (x, y) latent cells, as the official code.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor

MASK_THRESHOLD = 128  # official: the mask image resized to the latent grid, editable where > 128


def pixel_to_latent_xy(points_xy: np.ndarray, vae_scale_factor: int, latent_hw: tuple[int, int]) -> Tensor:
    """(N, 2) (x, y) image pixels -> int64 (x, y) latent cells: ⌊p / 8⌋ (the official integer division).

    A point on the far border (x = W) lands in the last cell, so every cell index is inside the latent.
    """
    cells = np.floor(np.asarray(points_xy, dtype=np.float64) / vae_scale_factor).astype(np.int64)
    h, w = latent_hw
    cells[:, 0] = cells[:, 0].clip(0, w - 1)
    cells[:, 1] = cells[:, 1].clip(0, h - 1)
    return torch.from_numpy(cells)


def drag_chunks(source: Tensor, target: Tensor, step_size: float) -> list[tuple[Tensor, Tensor]]:
    """The (source, target) latent points of each chunk: the longest drag in steps of about `step_size`.

    The number of chunks n is ⌊d_max / step_size⌋, or n + 1 when d_max / (n + 1) is closer to `step_size`;
    1 when d_max ≤ step_size. Chunk i moves from source + ⌊i/n·d⌋ to source + ⌊(i+1)/n·d⌋ (float32
    products truncated toward zero, as the official `.to(torch.int)`).

    Args:
        source, target: int64 (N, 2) (x, y) latent cells.
        step_size: latent pixels per chunk (2).
    """
    d = target - source  # (N, 2)
    d_max = torch.norm(d.float(), dim=1, keepdim=True).max()
    if d_max <= step_size:
        n = torch.tensor(1.0)
    else:
        n = d_max.div(torch.tensor([step_size]), rounding_mode="trunc")
        if (d_max / n - step_size).abs() > (d_max / (n + 1) - step_size).abs():
            n = n + 1
    count = int(n)
    return [
        (source + (i / n * d).to(torch.int64), source + ((i + 1) / n * d).to(torch.int64)) for i in range(count)
    ]


def patch_bounds(source: Tensor, target: Tensor, r: int, latent_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Extents (x_lower, x_upper, y_lower, y_upper) of the copied patch, shrunk so that both the source
    and the target patch fit: the patch spans [p - lower, p + upper) on each axis.

    As the official `adaption_r`, the upper bound is measured to the last index (size - 1), so a patch
    never reaches the last latent row/column; a (2r)² patch in the interior.
    """
    max_y, max_x = latent_hw[0] - 1, latent_hw[1] - 1
    sx, sy, tx, ty = (int(v) for v in (*source.tolist(), *target.tolist()))
    return (
        min(r, sx, tx),
        min(r, max_x - sx, max_x - tx),
        min(r, sy, ty),
        min(r, max_y - sy, max_y - ty),
    )


def copy_and_paste(
    latents: Tensor,
    sources: Tensor,
    targets: Tensor,
    r: int,
    alpha: float,
    beta: float,
    draw_noise: Callable[[tuple[int, ...]], Tensor],
) -> Tensor:
    """Paste each source patch at its target (× alpha) and noise the source (β·src + sqrt(1-β²)·noise).

    Pairs are applied one after the other on the same latent (a later pair sees the earlier pastes), with
    one noise draw per pair, as the official loop.

    Args:
        latents: (B, 4, h, w) x_{t0}; not modified.
        sources, targets: int64 (N, 2) (x, y) latent cells of this chunk.
        r: patch radius (5: a 10 × 10 patch).
        alpha: target-patch scale (1.1).
        beta: share of the source signal kept in the source patch (0.3).
        draw_noise: shape -> standard normal tensor on the latents' device (the method's generator).

    Returns:
        (B, 4, h, w) the edited latent.
    """
    out = latents.clone()
    noise_scale = (1 - beta**2) ** 0.5
    for source, target in zip(sources, targets, strict=True):
        xl, xu, yl, yu = patch_bounds(source, target, r, tuple(latents.shape[-2:]))
        sx, sy = int(source[0]), int(source[1])
        tx, ty = int(target[0]), int(target[1])
        patch = out[:, :, sy - yl : sy + yu, sx - xl : sx + xu].clone()  # (B, 4, yl+yu, xl+xu)
        noise = draw_noise((out.shape[0], out.shape[1], yl + yu, xl + xu))
        out[:, :, sy - yl : sy + yu, sx - xl : sx + xu] = beta * patch + noise_scale * noise
        out[:, :, ty - yl : ty + yu, tx - xl : tx + xu] = patch * alpha
    return out


def latent_mask(mask: np.ndarray, latent_hw: tuple[int, int]) -> Tensor:
    """DragBench mask (H, W), nonzero = editable -> bool (h, w) on the latent grid.

    DragBench-S stores the mask as an 8-bit image (0 / 255); the official code resizes it with PIL's
    default filter (bicubic) to the latent size and keeps cells > 128. The same rule on the 0/255 image.
    """
    image = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255)  # 2-D uint8: mode "L"
    small = image.resize((latent_hw[1], latent_hw[0]), resample=Image.BICUBIC)  # PIL takes (w, h)
    return torch.from_numpy(np.asarray(small) > MASK_THRESHOLD)
