"""Reference-latent control: mutual self-attention as diffusers attention processors (SPEC §2).

In the final denoising of the batch [reference, edited], the self-attention layers with execution index
>= `start_layer` (10-15 in SD-1.5: those of `up_blocks[2]` and `up_blocks[3]`) let every item's queries
attend to the keys/values of item 0 (the reference). Layers are selected by their position in the module
tree (down, mid, up), never by counting calls; the step index is set explicitly by the denoising loop.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

log = logging.getLogger(__name__)

REFERENCE_INDEX = 0  # batch item whose keys/values the controlled layers share (the un-dragged branch)


def self_attention_layers(unet: torch.nn.Module) -> list[str]:
    """Names of the UNet's self-attention modules in execution order (down blocks, mid block, up blocks).

    `unet.attn_processors` lists down, up, mid; the UNet runs down, mid, up, which is the order here.
    """
    names = []
    for prefix in ("down_blocks", "mid_block", "up_blocks"):
        part = getattr(unet, prefix, None)
        if part is None:
            continue
        for name, module in part.named_modules():
            if isinstance(module, Attention) and not module.is_cross_attention:
                names.append(f"{prefix}.{name}")
    return names


def _attend(
    attn: Attention,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    temb: torch.Tensor | None,
    share_reference: bool,
) -> torch.Tensor:
    """diffusers' SDPA attention; with `share_reference` the keys/values of item 0 serve every item."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    input_ndim = hidden_states.ndim
    if input_ndim == 4:
        batch, channel, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)  # (B, N, C)
    batch, seq_len, _ = hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
    if attention_mask is not None:
        attention_mask = attn.prepare_attention_mask(attention_mask, seq_len, batch)
        attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    if encoder_hidden_states is None:
        encoder_hidden_states = hidden_states
    elif attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    key = attn.to_k(encoder_hidden_states)
    value = attn.to_v(encoder_hidden_states)
    head_dim = key.shape[-1] // attn.heads
    query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, N, d)
    key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, M, d)
    value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, M, d)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    if share_reference:
        ref = slice(REFERENCE_INDEX, REFERENCE_INDEX + 1)
        key = key[ref].expand_as(key)  # (B, heads, M, d): item 0's keys for everyone
        value = value[ref].expand_as(value)
        if attention_mask is not None:
            attention_mask = attention_mask[ref].expand_as(attention_mask)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0)
    out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)  # (B, N, C)
    out = attn.to_out[1](attn.to_out[0](out))
    if input_ndim == 4:
        out = out.transpose(-1, -2).reshape(batch, channel, height, width)  # (B, C, H, W)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


class MutualSelfAttnProcessor:
    """Processor for one controlled self-attention layer; active from `control.start_step` on."""

    def __init__(self, control: MutualSelfAttention) -> None:
        self.control = control

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: object,
        **kwargs: object,
    ) -> torch.Tensor:
        share = self.control.step >= self.control.start_step
        return _attend(attn, hidden_states, encoder_hidden_states, attention_mask, temb, share)


class MutualSelfAttention:
    """Context manager installing mutual self-attention on a UNet; restores the previous processors on exit.

    Self-attention layers with execution index >= `start_layer` get `MutualSelfAttnProcessor`; every other
    attention module gets diffusers' SDPA processor (the official code runs all attention through SDPA in this
    phase). The batch must be [reference, edited, ...]. Call `on_step(i, t)` before each denoising UNet call
    (e.g. as `ddim_denoise(step_callback=...)`); steps >= `start_step` are controlled.

    Args:
        unet: diffusers UNet2DConditionModel.
        start_layer: first controlled self-attention layer in execution order (SPEC §2: 10).
        start_step: first controlled denoising step, counted from 0 (SPEC §2: 0).
    """

    def __init__(self, unet: torch.nn.Module, start_layer: int, start_step: int = 0) -> None:
        self.unet = unet
        self.start_layer = start_layer
        self.start_step = start_step
        self.step = 0
        layers = self_attention_layers(unet)
        self.controlled = layers[start_layer:]
        self._saved: dict | None = None

    def on_step(self, index: int, timestep: int | None = None) -> None:
        """Tell the processors which denoising step (from 0) the next UNet call belongs to."""
        self.step = index

    def __enter__(self) -> MutualSelfAttention:
        self._saved = dict(self.unet.attn_processors)
        controlled = {f"{name}.processor" for name in self.controlled}
        processors = {
            key: MutualSelfAttnProcessor(self) if key in controlled else AttnProcessor2_0()
            for key in self._saved
        }
        missing = controlled - set(processors)
        assert not missing, f"controlled layers without a processor slot: {sorted(missing)}"
        self.unet.set_attn_processor(processors)
        self.step = 0
        log.debug("mutual self-attention on %d layers: %s", len(self.controlled), self.controlled)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            self.unet.set_attn_processor(self._saved)
            self._saved = None


@contextlib.contextmanager
def classic_attention(unet: torch.nn.Module) -> Iterator[None]:
    """Switch every attention module to diffusers' classic processor (`set_default_attn_processor`), as the
    official no-LoRA path does for inversion and the drag loop; restores the previous processors on exit."""
    saved = dict(unet.attn_processors)
    unet.set_default_attn_processor()
    try:
        yield
    finally:
        unet.set_attn_processor(saved)
