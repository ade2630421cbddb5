"""Square-domain adaptation for DragGAN on DragBench (protocol §5): map a (often non-square) sample into the
generator's R x R domain by cropping or padding, and composite the edited square back into the canvas.

Points are (x, y) image pixels with pixel centres at integer coordinates, on both sides of the mapping.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

CANVAS_MODES = ("auto", "crop", "pad")


@dataclass(frozen=True)
class SquareMapping:
    """The square window [x0, x0+side) x [y0, y0+side) of the original canvas, resized to `res` px.

    Attributes:
        mode: "crop" (window inside the image) or "pad" (window larger than the image, edge-padded).
        x0, y0: top-left of the window in original pixels (negative in pad mode).
        side: window side in original pixels.
        res: generator resolution.
        height, width: original canvas size.
    """

    mode: str
    x0: int
    y0: int
    side: int
    res: int
    height: int
    width: int

    @property
    def scale(self) -> float:
        return self.res / self.side

    def to_square(self, points_xy: np.ndarray) -> np.ndarray:
        """(N, 2) original (x, y) -> generator-domain (x, y)."""
        offset = np.array([self.x0, self.y0], dtype=np.float64)
        return (np.asarray(points_xy, dtype=np.float64) - offset + 0.5) * self.scale - 0.5

    def from_square(self, points_xy: np.ndarray) -> np.ndarray:
        """(N, 2) generator-domain (x, y) -> original (x, y)."""
        offset = np.array([self.x0, self.y0], dtype=np.float64)
        return (np.asarray(points_xy, dtype=np.float64) + 0.5) / self.scale - 0.5 + offset

    def as_dict(self) -> dict:
        return asdict(self)


def _fits(points_xy: np.ndarray, x0: int, y0: int, side: int) -> bool:
    p = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    return bool(
        np.all((p[:, 0] >= x0) & (p[:, 0] <= x0 + side - 1) & (p[:, 1] >= y0) & (p[:, 1] <= y0 + side - 1))
    )


def plan_square(
    height: int, width: int, points_xy: np.ndarray, res: int, mode: str = "auto"
) -> SquareMapping:
    """Choose the square window for a canvas.

    "crop": side = min(H, W), centred on the bounding box of `points_xy` (handles and targets), clamped into
    the image. "pad": side = max(H, W), image centred, the rest edge-padded. "auto": crop if every point falls
    inside the crop, else pad. A square canvas always maps with the identity window.

    Raises:
        ValueError: unknown mode, or mode "crop" when the points do not fit in any crop.
    """
    if mode not in CANVAS_MODES:
        raise ValueError(f"canvas mode must be one of {CANVAS_MODES}, got {mode!r}")
    p = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    if mode in ("crop", "auto"):
        side = min(height, width)
        cx, cy = (p[:, 0].min() + p[:, 0].max()) / 2, (p[:, 1].min() + p[:, 1].max()) / 2
        x0 = int(np.clip(round(cx - side / 2), 0, width - side))
        y0 = int(np.clip(round(cy - side / 2), 0, height - side))
        if _fits(p, x0, y0, side):
            return SquareMapping("crop", x0, y0, side, res, height, width)
        if mode == "crop":
            raise ValueError(
                f"points span more than a {side}px square crop of a {height}x{width} image; "
                f"use method.canvas=pad or auto"
            )
    side = max(height, width)
    return SquareMapping("pad", (width - side) // 2, (height - side) // 2, side, res, height, width)


def _window(array: np.ndarray, m: SquareMapping) -> np.ndarray:
    """The (side, side, ...) window of `array`, edge-padded where it leaves the canvas."""
    pad_y = (max(-m.y0, 0), max(m.y0 + m.side - m.height, 0))
    pad_x = (max(-m.x0, 0), max(m.x0 + m.side - m.width, 0))
    pads = [pad_y, pad_x] + [(0, 0)] * (array.ndim - 2)
    padded = np.pad(array, pads, mode="edge")
    y, x = m.y0 + pad_y[0], m.x0 + pad_x[0]
    return padded[y : y + m.side, x : x + m.side]


def image_to_square(image: np.ndarray, m: SquareMapping) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (res, res, 3): window, Lanczos resize."""
    window = _window(image, m)
    return np.asarray(Image.fromarray(window).resize((m.res, m.res), Image.Resampling.LANCZOS))


def mask_to_square(mask: np.ndarray, m: SquareMapping) -> np.ndarray:
    """bool (H, W) -> bool (res, res): window (padding counts as not editable), nearest resize."""
    window = _window(mask.astype(np.uint8), m) * _inside_mask(m)  # (side, side)
    out = Image.fromarray(window * 255).resize((m.res, m.res), Image.Resampling.NEAREST)
    return np.asarray(out) > 0


def _inside_mask(m: SquareMapping) -> np.ndarray:
    """(side, side) uint8, 1 where the window covers the original canvas."""
    ys = np.arange(m.side) + m.y0
    xs = np.arange(m.side) + m.x0
    return ((ys[:, None] >= 0) & (ys[:, None] < m.height) & (xs[None] >= 0) & (xs[None] < m.width)).astype(
        np.uint8
    )


def regenerated_box(m: SquareMapping) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), half-open: the part of the canvas `paste_square` fills with the generator's pixels
    (the window clipped to the canvas); outside it the original's pixels stay (methods.base.EditResult)."""
    return max(m.x0, 0), max(m.y0, 0), min(m.x0 + m.side, m.width), min(m.y0 + m.side, m.height)


def paste_square(original: np.ndarray, square: np.ndarray, m: SquareMapping) -> np.ndarray:
    """Composite an edited (res, res, 3) square back into a copy of the original (H, W, 3) canvas.

    Pixels outside the window are the original's, bit for bit; padding of pad mode is dropped.
    """
    resized = np.asarray(Image.fromarray(square).resize((m.side, m.side), Image.Resampling.LANCZOS))
    out = original.copy()
    ys, ye = max(m.y0, 0), min(m.y0 + m.side, m.height)
    xs, xe = max(m.x0, 0), min(m.x0 + m.side, m.width)
    out[ys:ye, xs:xe] = resized[ys - m.y0 : ye - m.y0, xs - m.x0 : xe - m.x0]
    return out
