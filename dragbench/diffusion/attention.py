"""Attention control as diffusers attention processors: key/value injection and mutual self-attention.

`SelfAttentionControl` is the slot: on the self-attention layers with execution index >= `start_layer`
(counted in *this* UNet's module tree: down, mid, up; SD-1.5 has 16, see `self_attention_layers`), from
denoising step `start_step` on, a `KeyValueEdit` may replace each layer's keys and values before attention
(`StoredKeyValues`: FastDrag's keys/values recorded during inversion and injected during denoising, protocol
§9). `MutualSelfAttention` (protocol §2) is the
edit "every batch item attends to the keys/values of item 0 (the reference)", used by DragDiffusion's final
denoising of [reference, edited] (layers 10-15 of SD-1.5: those of `up_blocks[2]` and `up_blocks[3]`).
Layers are never selected by counting calls; the step index is set explicitly by the denoising loop.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

log = logging.getLogger(__name__)

REFERENCE_INDEX = 0  # batch item whose keys/values the controlled layers share (the un-dragged branch)

# (layer name, denoising step from 0, keys (B, heads, M, d), values (B, heads, M, d)) -> (keys, values)
KeyValueEdit = Callable[[str, int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


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


def controlled_layers(unet: torch.nn.Module, start_layer: int) -> list[str]:
    """Self-attention layers from execution index `start_layer` on (0..n, n = none), validated for this UNet.

    Raises:
        ValueError: `start_layer` outside 0..n, naming n for this UNet.
    """
    layers = self_attention_layers(unet)
    if not 0 <= start_layer <= len(layers):
        raise ValueError(
            f"start_layer={start_layer} but this UNet has {len(layers)} self-attention layers "
            f"(execution order, 0-based): set method.start_layer in 0..{len(layers)}"
        )
    return layers[start_layer:]


def share_reference(key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every batch item gets the keys/values of item `REFERENCE_INDEX` (mutual self-attention)."""
    ref = slice(REFERENCE_INDEX, REFERENCE_INDEX + 1)
    return key[ref].expand_as(key), value[ref].expand_as(value)


def _attend(
    attn: Attention,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    temb: torch.Tensor | None,
    kv_edit: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None,
) -> torch.Tensor:
    """diffusers' SDPA attention; `kv_edit` (if any) replaces keys/values after projection."""
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
    if kv_edit is not None:
        if attention_mask is not None:
            raise ValueError("key/value editing on a self-attention call with an attention mask is not "
                             "supported: call the UNet without attention_mask")
        key, value = kv_edit(key, value)  # (B, heads, M', d) each
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0)
    out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)  # (B, N, C)
    out = attn.to_out[1](attn.to_out[0](out))
    if input_ndim == 4:
        out = out.transpose(-1, -2).reshape(batch, channel, height, width)  # (B, C, H, W)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


class ControlledAttnProcessor:
    """Processor for one controlled self-attention layer; its `KeyValueEdit` applies from `start_step` on."""

    def __init__(self, control: SelfAttentionControl, layer: str) -> None:
        self.control = control
        self.layer = layer

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
        control = self.control
        kv_edit = None
        if control.step >= control.start_step:
            def kv_edit(key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                return control.edit_kv(self.layer, control.step, key, value)
        return _attend(attn, hidden_states, encoder_hidden_states, attention_mask, temb, kv_edit)


class SelfAttentionControl:
    """Context manager: key/value edits on a UNet's later self-attention layers; restores processors on exit.

    Self-attention layers with execution index >= `start_layer` get a `ControlledAttnProcessor` that calls
    `edit_kv(layer, step, keys, values)` from step `start_step` on; every other attention module gets
    diffusers' SDPA processor. Call `on_step(i, t)` before each denoising UNet call (e.g. as
    `ddim_denoise(step_callback=...)`). Subclass and override `edit_kv`, or pass `kv_edit`.

    Args:
        unet: diffusers UNet2DConditionModel.
        start_layer: first controlled self-attention layer in execution order, 0..n for this UNet's n layers.
        start_step: first controlled denoising step, counted from 0.
        kv_edit: the `KeyValueEdit` (None: `edit_kv` of the subclass).
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        start_layer: int,
        start_step: int = 0,
        kv_edit: KeyValueEdit | None = None,
    ) -> None:
        self.unet = unet
        self.start_layer = start_layer
        self.start_step = start_step
        self.step = 0
        self.timestep: int | None = None  # DDPM timestep of the next UNet call, when the loop says it
        self.controlled = controlled_layers(unet, start_layer)
        self._kv_edit = kv_edit
        self._saved: dict | None = None

    def edit_kv(
        self, layer: str, step: int, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """New (keys, values) for `layer` at denoising `step`: (B, heads, M', d) each."""
        if self._kv_edit is None:
            raise NotImplementedError(f"{type(self).__name__}: pass kv_edit or override edit_kv")
        return self._kv_edit(layer, step, key, value)

    def on_step(self, index: int, timestep: int | None = None) -> None:
        """Tell the processors which step (from 0) and DDPM timestep the next UNet call belongs to."""
        self.step = index
        self.timestep = None if timestep is None else int(timestep)

    def __enter__(self) -> SelfAttentionControl:
        self._saved = dict(self.unet.attn_processors)
        controlled = {f"{name}.processor": name for name in self.controlled}
        processors = {
            key: ControlledAttnProcessor(self, controlled[key]) if key in controlled else AttnProcessor2_0()
            for key in self._saved
        }
        missing = set(controlled) - set(processors)
        assert not missing, f"controlled layers without a processor slot: {sorted(missing)}"
        self.unet.set_attn_processor(processors)
        self.step = 0
        self.timestep = None
        log.debug("%s on %d layers: %s", type(self).__name__, len(self.controlled), self.controlled)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            self.unet.set_attn_processor(self._saved)
            self._saved = None


class MutualSelfAttention(SelfAttentionControl):
    """Mutual self-attention (protocol §2): controlled layers attend to the keys/values of batch item 0.

    The batch must be [reference, edited, ...]. Other attention modules run diffusers' SDPA (the official
    code runs all attention through SDPA in this phase).

    Args:
        unet: diffusers UNet2DConditionModel.
        start_layer: first controlled self-attention layer in execution order (protocol §2: 10 of SD-1.5's 16).
        start_step: first controlled denoising step, counted from 0 (protocol §2: 0).
    """

    def __init__(self, unet: torch.nn.Module, start_layer: int, start_step: int = 0) -> None:
        super().__init__(unet, start_layer, start_step)

    def edit_kv(
        self, layer: str, step: int, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return share_reference(key, value)


class StoredKeyValues(SelfAttentionControl):
    """FastDrag's key/value injection (protocol §9): record each controlled layer's keys/values per timestep
    during inversion, then attend with the recorded ones at the same timestep during denoising.

    `mode = "record"`: the layers attend as usual and store their (keys, values); `mode = "inject"`: each
    layer's keys/values are replaced by those stored for (layer, timestep), expanded to the batch (the
    official code stores the batch-1 inversion's and repeats them). Keyed by the DDPM timestep passed to
    `on_step`, because inversion and denoising number their steps differently. Not mutual self-attention: the
    source is the inversion pass, not another batch item. The store survives leaving the context, so one
    instance can record in one `with` block and inject in another.

    Args:
        unet: diffusers UNet2DConditionModel.
        start_layer: first controlled self-attention layer in execution order (FastDrag: the first of the
            up blocks, `up_block_start_layer`).
        start_step: first controlled step, counted from 0.
    """

    def __init__(self, unet: torch.nn.Module, start_layer: int, start_step: int = 0) -> None:
        super().__init__(unet, start_layer, start_step)
        self.mode = "record"
        self.store: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def edit_kv(
        self, layer: str, step: int, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.timestep is None:
            raise ValueError("StoredKeyValues needs the timestep: pass step_callback=control.on_step to the loop")
        if self.mode == "record":
            self.store[(layer, self.timestep)] = (key.detach(), value.detach())
            return key, value
        if self.mode != "inject":
            raise ValueError(f"StoredKeyValues.mode must be 'record' or 'inject', got {self.mode!r}")
        stored = self.store.get((layer, self.timestep))
        if stored is None:
            raise KeyError(
                f"no keys/values recorded for {layer} at timestep {self.timestep}: the recording pass must "
                "visit every timestep the injection pass uses"
            )
        keys, values = stored  # (1, heads, M, d) each, from the batch-1 inversion
        batch = key.shape[0]
        return keys.to(key.dtype).expand(batch, -1, -1, -1), values.to(value.dtype).expand(batch, -1, -1, -1)


def up_block_start_layer(unet: torch.nn.Module) -> int:
    """Execution index of the first self-attention layer in `up_blocks` (SD-1.5: 7 of 16).

    Raises:
        ValueError: the UNet has no self-attention in its up blocks.
    """
    layers = self_attention_layers(unet)
    for index, name in enumerate(layers):
        if name.startswith("up_blocks."):
            return index
    raise ValueError(f"this UNet has no self-attention layer in up_blocks ({len(layers)} layers elsewhere)")


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


def attention_for(unet: torch.nn.Module, lora_active: bool) -> contextlib.AbstractContextManager:
    """The attention processors the official DragDiffusion-family code runs inversion and the drag with.

    Without LoRA it calls `set_default_attn_processor()` (classic attention); with LoRA it keeps the loaded
    processors (SDPA). The two differ by ~1e-6 on the UNet output, so the choice is part of a result.
    """
    return contextlib.nullcontext() if lora_active else classic_attention(unet)
