"""The UNet bottleneck (mid-block output): capture it, and replace it during a forward pass.

DragNoise (Liu et al., CVPR 2024; protocol §8) optimises this feature instead of the latent z_t and injects it
in later denoising steps. The official code does both by a copied UNet forward that takes a replacement for the
mid-block output (haofengl/DragNoise `drag_pipeline.py`, commit 1072731); here a forward hook on
`unet.mid_block` does the same with the stock UNet: the down and mid blocks still run, their output is then
swapped before the mid-block residual (none in SD) and the up blocks, as there.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class MidBlockOverride:
    """Context manager: records the mid-block output of every UNet call; replaces it while `replacement` is set.

    Attributes:
        captured: the mid-block output of the last UNet call (the replacement, when one was set).
        replacement: (1 or B, C, h, w) tensor put in place of the mid-block output, or None (stock UNet).
            A batch of 1 is expanded to the call's batch. Gradients flow into it when it requires grad.

    Args:
        unet: a diffusers `UNet2DConditionModel` (anything with a `.mid_block`).

    Example:
        >>> with MidBlockOverride(backbone.unet) as bottleneck:
        ...     backbone.predict_noise(z, t, cond)
        ...     h = bottleneck.captured.detach()            # (1, 1280, 8, 8) for SD-1.5 at 512 px
        ...     bottleneck.replacement = h_edited           # next calls use it
    """

    def __init__(self, unet: nn.Module) -> None:
        if getattr(unet, "mid_block", None) is None:
            raise ValueError("this UNet has no mid_block: the bottleneck override needs an SD-style UNet")
        self.unet = unet
        self.captured: torch.Tensor | None = None
        self.replacement: torch.Tensor | None = None
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def _hook(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if self.replacement is None:
            self.captured = output
            return output
        if self.replacement.shape[1:] != output.shape[1:]:
            raise ValueError(
                f"bottleneck replacement has shape {tuple(self.replacement.shape)} but the mid block gives "
                f"{tuple(output.shape)}: capture it from the same latent size"
            )
        # the caller's dtype is kept: an fp32 leaf under fp16 autocast feeds the up blocks as the official
        # code's fp32 `h_feature` does
        self.captured = self.replacement.expand(output.shape[0], *self.replacement.shape[1:])
        return self.captured

    def __enter__(self) -> MidBlockOverride:
        self._handle = self.unet.mid_block.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
