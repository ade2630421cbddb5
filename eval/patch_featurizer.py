"""An exact, model-free featurizer: each pixel's feature is its (2r+1)² RGB neighbourhood.

Not a metric of its own: it gives Mean Distance known answers (a translated texture is found exactly where
it moved), so the point-matching and scoring code can be tested without any diffusion model.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


class PatchFeaturizer:
    """Features (3·(2r+1)² [+2], H, W): the raw RGB values of the (2r+1)×(2r+1) patch around each pixel.

    Zero padding at the borders; the prompt is ignored. Matching is exact on textured images (every patch
    unique). On flat regions identical patches tie; `position_weight > 0` appends the pixel's (x, y) × weight
    as two channels, which breaks such ties towards the same position (an identity edit then matches every
    handle exactly) but biases matches of moved content — keep it 0 to measure motion.

    Args:
        radius: patch half-size r in pixels.
        position_weight: scale of the appended (x, y) channels; 0 = none.
        dtype: feature dtype (float64 makes tiny position differences visible to the cosine).
    """

    weights = "exact"  # not a learned model: Evaluator labels its scores weights=random (not comparable)

    def __init__(
        self, radius: int = 2, position_weight: float = 0.0, dtype: torch.dtype = torch.float32
    ) -> None:
        self.radius, self.position_weight, self.dtype = int(radius), float(position_weight), dtype

    def __call__(self, image: np.ndarray, prompt: str = "") -> Tensor:
        """uint8 (H, W, 3) -> (3·(2r+1)² [+2], H, W) patch features."""
        h, w = image.shape[:2]
        x = torch.tensor(image).permute(2, 0, 1)[None]  # (1, 3, H, W) uint8
        x = x.to(self.dtype)
        k = 2 * self.radius + 1
        feats = F.unfold(x, kernel_size=k, padding=self.radius).reshape(-1, h, w)  # (3·k², H, W)
        if self.position_weight:
            ys, xs = torch.meshgrid(torch.arange(h, dtype=self.dtype), torch.arange(w, dtype=self.dtype),
                                    indexing="ij")  # (H, W) each
            feats = torch.cat([feats, self.position_weight * torch.stack([xs, ys])])  # (3·k² + 2, H, W)
        return feats
