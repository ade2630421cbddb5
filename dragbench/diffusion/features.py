"""Intermediate UNet decoder features via forward hooks (DragDiffusion protocol §2 "features", DIFT protocol §3).

Replaces the official code's copied UNet forward: a forward hook on `unet.up_blocks[i]` records the block's
output (after its own upsampler, if any), with gradients when the UNet call had them.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


def check_unet_block(unet: nn.Module, unet_block: int) -> int:
    """The 0-based `up_blocks` index of a method's 1-based `unet_block` knob (3 = `up_blocks[2]`, the
    official feature index 3).

    Raises:
        ValueError: outside 1..len(unet.up_blocks), naming the range for this UNet.
    """
    n_blocks = len(unet.up_blocks)
    if not 1 <= unet_block <= n_blocks:
        raise ValueError(f"unet_block must be in 1..{n_blocks} (1-based up_blocks index), got {unet_block}")
    return unet_block - 1


class UNetFeatureHooks:
    """Context manager recording the outputs of selected `unet.up_blocks` on every UNet call.

    After each UNet forward inside the context, `features[i]` is the output (B, C, h, w) of
    `unet.up_blocks[i]` for that call (the previous call's entries are replaced).
    Hooks are removed on exit; the last features stay readable.

    Args:
        unet: a diffusers `UNet2DConditionModel` (anything with `.up_blocks`).
        block_indices: 0-based indices into `unet.up_blocks`.

    Example:
        >>> with UNetFeatureHooks(backbone.unet, [2]) as hooks:
        ...     eps = backbone.predict_noise(z, t, cond)
        ...     feats = hooks.features[2]
    """

    def __init__(self, unet: nn.Module, block_indices: list[int]) -> None:
        n_blocks = len(unet.up_blocks)
        bad = [i for i in block_indices if not 0 <= int(i) < n_blocks]
        if bad:
            raise ValueError(f"block_indices {bad} out of range: the UNet has {n_blocks} up_blocks (0-based)")
        self.unet = unet
        self.block_indices = [int(i) for i in block_indices]
        self.features: dict[int, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _make_hook(self, index: int):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            self.features[index] = output[0] if isinstance(output, tuple) else output

        return hook

    def clear(self) -> None:
        """Forget the recorded features (e.g. to free memory between calls)."""
        self.features = {}

    def __enter__(self) -> UNetFeatureHooks:
        self.clear()
        for i in self.block_indices:
            self._handles.append(self.unet.up_blocks[i].register_forward_hook(self._make_hook(i)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
