"""Drag visualisation (DragBench's `user_drag.png` look, protocol §1): tinted editable mask, handle→target arrows.

Used by `python -m dragbench show`, by `save_sample` for user_drag.png and by experiment tables.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

MASK_TINT_RGB = (255, 255, 255)  # editable region lightened, like the official drag UI's white overlay
MASK_TINT_ALPHA = 0.35
HANDLE_RGB = (255, 0, 0)  # red handles, blue targets: the DragDiffusion UI's colours
TARGET_RGB = (0, 0, 255)
ARROW_RGB = (255, 255, 0)
FINAL_RGB = (0, 255, 0)  # final tracked handles of an edit
_DOT_DIVISOR = 80  # dot radius = min(H, W) / 80 (6 px at 512), at least 2 px
_LINE_DIVISOR = 200  # line width = min(H, W) / 200 (3 px at 512), at least 1 px


def _tint(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blend MASK_TINT_RGB into the editable region (mask True) of a uint8 (H, W, 3) image."""
    out = image.astype(np.float32)
    tint = np.asarray(MASK_TINT_RGB, dtype=np.float32)
    out[mask] = (1 - MASK_TINT_ALPHA) * out[mask] + MASK_TINT_ALPHA * tint
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _arrow(
    draw: ImageDraw.ImageDraw, start: np.ndarray, end: np.ndarray, width: int, head: float, gap: float
) -> None:
    """Draw a line start→end with a filled triangular head whose tip stops `gap` px before `end` ((x, y))."""
    vec = end - start
    length = float(np.hypot(*vec))
    if length < 1e-6:
        return
    direction = vec / length
    if length > 2 * gap:  # leave the target dot visible
        end = end - direction * gap
        length -= gap
    draw.line([tuple(start), tuple(end)], fill=ARROW_RGB, width=width)
    normal = np.array([-direction[1], direction[0]])
    base = end - direction * min(head, length)
    corners = [tuple(end), tuple(base + normal * head / 2), tuple(base - normal * head / 2)]
    draw.polygon(corners, fill=ARROW_RGB)


def _dot(draw: ImageDraw.ImageDraw, center: np.ndarray, radius: float, rgb: tuple[int, int, int]) -> None:
    x, y = (float(v) for v in center)
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=rgb)


def draw_drag(
    image: np.ndarray,
    mask: np.ndarray | None,
    handles: np.ndarray,
    targets: np.ndarray,
    final: np.ndarray | None = None,
) -> np.ndarray:
    """Draw a drag instruction on an image.

    Args:
        image: uint8 (H, W, 3) RGB.
        mask: bool (H, W), True = editable (tinted); None or all-False draws no tint.
        handles: (N, 2) (x, y) pixels, drawn as red dots.
        targets: (N, 2) (x, y) pixels, blue dots; a yellow arrow goes from each handle to its target.
        final: optional (N, 2) (x, y) final tracked handles of an edit, drawn as green dots.

    Returns:
        A new uint8 (H, W, 3) array; the input is not modified.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    canvas = image.copy() if mask is None else _tint(image, np.asarray(mask, dtype=bool))
    height, width = image.shape[:2]
    radius = max(2.0, min(height, width) / _DOT_DIVISOR)
    line_width = max(1, round(min(height, width) / _LINE_DIVISOR))
    pil = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pil)
    handles = np.asarray(handles, dtype=np.float64).reshape(-1, 2)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1, 2)
    for h, t in zip(handles, targets, strict=True):
        _arrow(draw, h, t, line_width, head=3 * radius, gap=radius)
    for h, t in zip(handles, targets, strict=True):
        _dot(draw, h, radius, HANDLE_RGB)
        _dot(draw, t, radius, TARGET_RGB)
    if final is not None:
        for f in np.asarray(final, dtype=np.float64).reshape(-1, 2):
            _dot(draw, f, radius, FINAL_RGB)
    return np.asarray(pil, dtype=np.uint8).copy()
