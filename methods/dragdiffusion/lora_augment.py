"""The image augmentation of DragDiffusion's identity-preserving LoRA (SPEC §2 "LoRA" row).

The official `utils/lora_utils.py` builds every training batch from `lora_batch_size` independent draws of
`Resize(512, bilinear)` (shorter side to 512) + `RandomCrop(512)` of the one input image, then maps pixels to
[-1, 1]. There is no flip. Here 512 is a parameter (`size`) and the random offsets come from a seeded
`torch.Generator`, so a batch is reproducible on any device.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


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
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0  # (3, H, W)
    return (x - 0.5) / 0.5
