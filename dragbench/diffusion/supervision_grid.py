"""Where DragDiffusion's points live: (x, y) image pixels outside, (row, col) on the supervision grid inside.

protocol §2 "features": the grid is half the image size; official-ref README "Coordinates" gives the rounding
(float32, halves to even) and the way back to pixels. DragNoise and GoodDrag inherit this grid from the
DragDiffusion code they are built on.
"""

from __future__ import annotations

import numpy as np
import torch

from dragbench.sample import rc_to_xy, xy_to_rc

# protocol §2: features are resized to half the image resolution (the official `sup_res = int(0.5 * size)`).
SUPERVISION_SCALE = 0.5


def supervision_grid_size(height: int, width: int) -> tuple[int, int]:
    """(H, W) image pixels -> (h, w) of the supervision grid, `int(0.5 * size)` as the official code does."""
    return int(SUPERVISION_SCALE * height), int(SUPERVISION_SCALE * width)


def grid_points(
    image_hw: tuple[int, int], handles_xy: np.ndarray, targets_xy: np.ndarray, device: torch.device | str
) -> tuple[tuple[int, int], torch.Tensor, torch.Tensor]:
    """The supervision grid (h, w) of an image and its handles / targets on it, (N, 2) float32 (row, col).

    Args:
        image_hw: (H, W) of the image the points refer to.
        handles_xy, targets_xy: (N, 2) (x, y) image pixels.
        device: where the two point tensors go.
    """
    grid_hw = supervision_grid_size(*image_hw)
    handles_rc = xy_to_grid_rc(handles_xy, image_hw, grid_hw).to(device)
    targets_rc = xy_to_grid_rc(targets_xy, image_hw, grid_hw).to(device)
    return grid_hw, handles_rc, targets_rc


def points_record(
    grid_hw: tuple[int, int],
    handles_init_rc: torch.Tensor,
    handles_final_rc: torch.Tensor,
    targets_rc: torch.Tensor,
) -> dict[str, list]:
    """The grid and points a tracking method records in EditResult.info (results.csv), as plain lists."""
    return {
        "supervision_grid_hw": list(grid_hw),
        "handles_init_rc": handles_init_rc.tolist(),
        "handles_final_rc": handles_final_rc.tolist(),
        "targets_rc": targets_rc.tolist(),
    }


def xy_to_grid_rc(points_xy: np.ndarray, image_hw: tuple[int, int], grid_hw: tuple[int, int]) -> torch.Tensor:
    """Image (x, y) pixels -> integer-valued (row, col) on the supervision grid.

    Computed as the official code does: `y / H * grid_h` in float64, cast to float32, then rounded
    half to even (torch.round), so e.g. 28.5 -> 28 and 29.5 -> 30.

    Args:
        points_xy: (N, 2) float, (x, y) image pixels.
        image_hw: (H, W) of the image the points refer to.
        grid_hw: (h, w) of the supervision grid.

    Returns:
        float32 tensor (N, 2) of (row, col), integer-valued, clamped to the grid (a point on the last
        pixel row/column can round to the grid size, where the official code would index out of range).
    """
    rc = xy_to_rc(np.asarray(points_xy, dtype=np.float64))  # (N, 2) (y, x) in pixels
    scale = np.array([grid_hw[0], grid_hw[1]], dtype=np.float64)
    size = np.array([image_hw[0], image_hw[1]], dtype=np.float64)
    rounded = torch.round(torch.tensor(rc / size * scale, dtype=torch.float32))
    upper = torch.tensor([grid_hw[0] - 1, grid_hw[1] - 1], dtype=torch.float32)
    return torch.minimum(rounded.clamp(min=0), upper)


def grid_rc_to_xy(
    points_rc: torch.Tensor | np.ndarray, image_hw: tuple[int, int], grid_hw: tuple[int, int]
) -> np.ndarray:
    """Supervision-grid (row, col) -> image (x, y) pixels: `x = col * W / w`, `y = row * H / h`.

    Args:
        points_rc: (N, 2) (row, col) on the grid.
        image_hw: (H, W) of the target image.
        grid_hw: (h, w) of the grid.

    Returns:
        float64 array (N, 2) of (x, y) image pixels.
    """
    rc = np.asarray(torch.as_tensor(points_rc).detach().cpu(), dtype=np.float64)
    pixels_rc = rc * np.array([image_hw[0] / grid_hw[0], image_hw[1] / grid_hw[1]])
    return rc_to_xy(pixels_rc)
