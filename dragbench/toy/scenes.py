"""Toy-world scenes: 1–3 flat-coloured shapes on a smooth background, rendered by one batched torch function.

The same renderer draws the training data of the toy model (random scenes, on the training device) and the
drag samples with their ground-truth edits (`dragbench.toy.samples`), so the model sees exactly that world.
Coordinates are (x, y) pixels with pixel (col, row) centred at (col, row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Distinct, saturated object colours (RGB in [0, 1]); backgrounds are low-saturation greys, so a colour
# identifies an object (see dragbench.toy.locate).
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.75, 0.25),
    "blue": (0.15, 0.30, 0.90),
    "yellow": (0.95, 0.85, 0.15),
    "magenta": (0.85, 0.20, 0.80),
    "cyan": (0.15, 0.80, 0.85),
    "orange": (0.98, 0.55, 0.10),
    "purple": (0.50, 0.22, 0.78),
}
COLOUR_NAMES: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("disc", "square", "triangle", "ellipse")

# Every shape is drawn with the area of a disc of radius `size` (its "equivalent radius"):
SQUARE_HALF_SIDE = math.sqrt(math.pi) / 2  # half side / size: (2·h)² = π
TRIANGLE_CIRCUMRADIUS = math.sqrt(4 * math.pi / (3 * math.sqrt(3)))  # R / size: (3√3/4)·R² = π
# Radius of the smallest disc around the centre that holds each shape, per unit size (ellipse: worst aspect).
ELLIPSE_MIN_ASPECT = 0.5
BOUNDING_RADIUS = {
    "disc": 1.0,
    "square": SQUARE_HALF_SIDE * math.sqrt(2),
    "triangle": TRIANGLE_CIRCUMRADIUS,
    "ellipse": 1 / math.sqrt(ELLIPSE_MIN_ASPECT),
}
BACKGROUND_GREY = (0.35, 0.80)  # range of the background's grey level
BACKGROUND_TINT = 0.06  # max per-channel deviation from grey (keeps the background unsaturated)


@dataclass
class SceneBatch:
    """Parameters of B scenes with up to K object slots each (slot order = drawing order, last on top).

    Attributes:
        shape: long (B, K), index into SHAPES.
        centre: float (B, K, 2), (x, y) pixels of the shape's centroid.
        size: float (B, K), equivalent radius in pixels (the shape has the area of a disc of this radius).
        aspect: float (B, K), ellipse minor/major axis ratio (ignored by other shapes).
        angle: float (B, K), rotation in radians.
        colour: long (B, K), index into COLOUR_NAMES / PALETTE.
        present: bool (B, K), whether the slot holds an object.
        bg0, bg1: float (B, 3), background colours at the two ends of the gradient.
        bg_angle: float (B,), gradient direction in radians.
    """

    shape: torch.Tensor
    centre: torch.Tensor
    size: torch.Tensor
    aspect: torch.Tensor
    angle: torch.Tensor
    colour: torch.Tensor
    present: torch.Tensor
    bg0: torch.Tensor
    bg1: torch.Tensor
    bg_angle: torch.Tensor


def shape_sdf(shape: torch.Tensor, u: torch.Tensor, v: torch.Tensor, size: torch.Tensor,
              aspect: torch.Tensor) -> torch.Tensor:
    """Signed distance (pixels, < 0 inside) of each shape, in its own rotated frame.

    Args:
        shape: long (...,) shape index, broadcastable against u.
        u, v: float (..., H, W) coordinates relative to the centre, rotated into the shape's frame.
        size, aspect: float (...,) equivalent radius and ellipse aspect.
    """
    s = size[..., None, None]
    disc = torch.sqrt(u**2 + v**2) - s
    h = s * SQUARE_HALF_SIDE
    qx, qy = u.abs() - h, v.abs() - h
    square = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2) + torch.maximum(qx, qy).clamp(max=0)
    inradius = s * TRIANGLE_CIRCUMRADIUS / 2  # equilateral: inradius = R / 2
    normals = [(-math.sin(a), math.cos(a)) for a in (math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
    triangle = torch.stack([u * nx + v * ny for nx, ny in normals]).amax(0) - inradius
    a = s / torch.sqrt(aspect[..., None, None])
    b = s * torch.sqrt(aspect[..., None, None])
    ellipse = (torch.sqrt((u / a) ** 2 + (v / b) ** 2) - 1) * torch.minimum(a, b)  # first-order distance
    sdfs = torch.stack([disc, square, triangle, ellipse])  # (4, ..., H, W)
    index = shape[None, ..., None, None].expand(1, *disc.shape)
    return sdfs.gather(0, index)[0]


def object_sdf(scene: SceneBatch, height: int, width: int) -> torch.Tensor:
    """Signed distance field of every object slot: float (B, K, H, W), pixels, < 0 inside."""
    dev = scene.centre.device
    ys = torch.arange(height, device=dev, dtype=torch.float32)
    xs = torch.arange(width, device=dev, dtype=torch.float32)
    dx = xs[None, None, None, :] - scene.centre[..., 0, None, None]  # (B, K, 1, W)
    dy = ys[None, None, :, None] - scene.centre[..., 1, None, None]  # (B, K, H, 1)
    cos, sin = torch.cos(scene.angle)[..., None, None], torch.sin(scene.angle)[..., None, None]
    u = cos * dx + sin * dy  # (B, K, H, W): rotate by -angle
    v = -sin * dx + cos * dy
    return shape_sdf(scene.shape, u, v, scene.size, scene.aspect)


def render(scene: SceneBatch, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the scenes with 1-px anti-aliased edges.

    Returns:
        image: float (B, 3, H, W) in [0, 1].
        coverage: float (B, K, H, W) in [0, 1], the visible (unoccluded) coverage of each slot.
    """
    dev = scene.centre.device
    B, K = scene.shape.shape
    ys = torch.arange(height, device=dev, dtype=torch.float32)[:, None]
    xs = torch.arange(width, device=dev, dtype=torch.float32)[None, :]
    direction = torch.stack([torch.cos(scene.bg_angle), torch.sin(scene.bg_angle)], -1)  # (B, 2)
    proj = direction[:, 0, None, None] * (xs - width / 2) + direction[:, 1, None, None] * (ys - height / 2)
    t = (proj / max(height, width) + 0.5).clamp(0, 1)[:, None]  # (B, 1, H, W)
    image = scene.bg0[..., None, None] * (1 - t) + scene.bg1[..., None, None] * t  # (B, 3, H, W)
    rgb = torch.tensor(list(PALETTE.values()), device=dev)[scene.colour]  # (B, K, 3)
    alpha = (0.5 - object_sdf(scene, height, width)).clamp(0, 1) * scene.present[..., None, None]
    coverage = torch.zeros_like(alpha)
    for k in range(K):
        a = alpha[:, k, None]  # (B, 1, H, W)
        image = image * (1 - a) + rgb[:, k, :, None, None] * a
        coverage = coverage * (1 - a)
        coverage[:, k] = a[:, 0]
    return image, coverage


def random_scenes(batch: int, image_size: int, generator: torch.Generator, max_objects: int = 3,
                  size_range: tuple[float, float] = (5.0, 12.0)) -> SceneBatch:
    """Random training scenes: 1..max_objects objects anywhere inside the image (overlaps allowed).

    Colours within a scene are distinct. All draws come from `generator` (on its device).
    """
    dev = generator.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=dev)

    K = max_objects
    n_obj = torch.randint(1, K + 1, (batch,), generator=generator, device=dev)
    present = torch.arange(K, device=dev)[None, :] < n_obj[:, None]
    shape = torch.randint(0, len(SHAPES), (batch, K), generator=generator, device=dev)
    size = size_range[0] + (size_range[1] - size_range[0]) * rand(batch, K)
    aspect = ELLIPSE_MIN_ASPECT + (1 - ELLIPSE_MIN_ASPECT) * rand(batch, K)
    angle = 2 * math.pi * rand(batch, K)
    bound = size * torch.tensor([BOUNDING_RADIUS[s] for s in SHAPES], device=dev)[shape]
    lo = (bound + 1)[..., None]
    centre = lo + (image_size - 1 - 2 * lo).clamp(min=0) * rand(batch, K, 2)
    colour_idx = torch.argsort(rand(batch, len(PALETTE)), dim=1)[:, :K]  # distinct colours per scene
    grey = BACKGROUND_GREY[0] + (BACKGROUND_GREY[1] - BACKGROUND_GREY[0]) * rand(batch, 2, 1)
    bg = (grey + BACKGROUND_TINT * (2 * rand(batch, 2, 3) - 1)).clamp(0, 1)
    return SceneBatch(
        shape=shape, centre=centre, size=size, aspect=aspect, angle=angle, colour=colour_idx,
        present=present, bg0=bg[:, 0], bg1=bg[:, 1], bg_angle=2 * math.pi * rand(batch),
    )


def caption(shapes: list[str], colours: list[str]) -> str:
    """The prompt of a scene, e.g. "red disc and blue square" (objects in drawing order)."""
    words = [f"{c} {s}" for s, c in zip(shapes, colours, strict=True)]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def batch_captions(scene: SceneBatch) -> list[str]:
    """Captions of every scene of a batch (one device→host copy)."""
    shapes, colours, present = scene.shape.tolist(), scene.colour.tolist(), scene.present.tolist()
    out = []
    for b in range(len(shapes)):
        ks = [k for k in range(len(shapes[b])) if present[b][k]]
        out.append(caption([SHAPES[shapes[b][k]] for k in ks], [COLOUR_NAMES[colours[b][k]] for k in ks]))
    return out
