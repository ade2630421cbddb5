"""The training batches of DragDiffusion's identity-preserving LoRA (protocol §2 "LoRA" row).

The official `utils/lora_utils.py` builds every training batch from `lora_batch_size` independent draws of
`Resize(512, bilinear)` (shorter side to 512) + `RandomCrop(512)` of the one input image, then maps pixels to
[-1, 1]. There is no flip. Here 512 is a parameter (`size`) and the random offsets come from a seeded
`torch.Generator`, so a batch is reproducible on any device. Each step encodes the crops with the VAE and
draws a posterior *sample* (`latent_dist.sample()`, not the mean) times the latent scale.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from dragbench.backbone import Backbone


def resize_shorter_side(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinearly resize so the shorter side is `size`, keeping the aspect ratio (torchvision `Resize(int)`).

    The longer side becomes `int(size * long / short)`, as torchvision computes it; an image whose shorter
    side already equals `size` is returned unchanged.

    Args:
        image: uint8 (H, W, 3).
        size: target length of the shorter side, in pixels.

    Returns:
        uint8 (H', W', 3) with min(H', W') == size.
    """
    h, w = image.shape[:2]
    short, long = min(h, w), max(h, w)
    if short == size:
        return image
    new_long = int(size * long / short)
    new_h, new_w = (size, new_long) if h <= w else (new_long, size)
    return np.asarray(Image.fromarray(image).resize((new_w, new_h), resample=Image.BILINEAR))


def random_crop_offsets(
    height: int, width: int, size: int, n: int, generator: torch.Generator
) -> torch.Tensor:
    """`n` independent uniform (top, left) offsets of a `size`×`size` crop (torchvision `RandomCrop`).

    Args:
        height, width: image size in pixels; both must be >= size.
        size: crop side in pixels.
        n: number of crops.
        generator: CPU generator the offsets are drawn from.

    Returns:
        int64 (n, 2) of (top, left) in pixels (row, col).

    Raises:
        ValueError: the image is smaller than the crop.
    """
    if height < size or width < size:
        raise ValueError(f"crop size {size} is larger than the image ({height}x{width})")
    tops = torch.randint(0, height - size + 1, (n,), generator=generator)
    lefts = torch.randint(0, width - size + 1, (n,), generator=generator)
    return torch.stack([tops, lefts], dim=1)  # (n, 2)


def to_model_range(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [-1, 1] (torchvision `ToTensor` + `Normalize(0.5, 0.5)`)."""
    x = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float() / 255.0  # (3, H, W)
    return (x - 0.5) / 0.5


class CropLatentSampler:
    """Scaled VAE-posterior samples of random crops of one image; each crop offset is encoded only once.

    Exact: the encoder is deterministic and each crop is encoded alone (so results don't depend on which
    crops were encoded together), and a posterior sample is mean + std · ε with ε from the generator, as
    diffusers' `DiagonalGaussianDistribution.sample` draws it.

    Args:
        backbone: supplies the VAE, device, dtype and latent scale.
        image: uint8 (H, W, 3).
        size: crop side in pixels (a multiple of the VAE factor).
        generator: CPU generator for crop offsets and posterior noise.
    """

    def __init__(self, backbone: Backbone, image: np.ndarray, size: int, generator: torch.Generator):
        self.backbone, self.size, self.generator = backbone, size, generator
        self.pixels = to_model_range(resize_shorter_side(image, size))  # (3, H', W') in [-1, 1]
        self.posteriors: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}

    @torch.no_grad()
    def _posterior(self, top: int, left: int) -> tuple[Tensor, Tensor]:
        if (top, left) not in self.posteriors:
            bb, s = self.backbone, self.size
            crop = self.pixels[None, :, top : top + s, left : left + s]  # (1, 3, s, s)
            dist = bb.vae.encode(crop.to(bb.device, bb.dtype)).latent_dist
            self.posteriors[(top, left)] = (dist.mean[0], dist.std[0])
        return self.posteriors[(top, left)]

    def sample(self, n: int) -> Tensor:
        """(n, 4, size/8, size/8) scaled latents of n independent random crops, in the backbone's dtype."""
        _, h, w = self.pixels.shape
        offsets = random_crop_offsets(h, w, self.size, n, self.generator).tolist()
        posteriors = [self._posterior(t, l) for t, l in offsets]
        mean = torch.stack([m for m, _ in posteriors])  # (n, 4, size/8, size/8)
        std = torch.stack([sd for _, sd in posteriors])
        eps = torch.randn(mean.shape, generator=self.generator).to(mean.device, mean.dtype)
        return (mean + std * eps) * self.backbone.latent_scale
