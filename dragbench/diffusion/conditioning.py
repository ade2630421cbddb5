"""What the denoiser is conditioned on, and the one place a UNet is called to predict noise.

Methods never write `unet(x, t, encoder_hidden_states=...)` themselves: they ask the backbone for a
`Conditioning` (`backbone.condition(prompt)`) and for noise (`backbone.predict_noise(x, t, cond)`), so a
backbone with other conditioning (SDXL: two text encoders, pooled text embeddings and size/crop time ids as
`added_cond_kwargs`) plugs in by implementing `ConditionedBackbone`, without touching a method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


@dataclass(frozen=True)
class Conditioning:
    """Conditioning of one batch of denoiser calls.

    Attributes:
        encoder_hidden_states: (B, L, D) token embeddings the cross-attention layers attend to
            (SD-1.5: CLIP `last_hidden_state`, (B, 77, 768); SDXL: both encoders' states concatenated).
        added_cond_kwargs: extra UNet inputs, or None (SD-1.x/2.x). SDXL: {"text_embeds": (B, 1280),
            "time_ids": (B, 6)}.
    """

    encoder_hidden_states: Tensor
    added_cond_kwargs: dict[str, Tensor] | None = None

    @property
    def batch_size(self) -> int:
        """B, the number of latents this conditioning serves."""
        return int(self.encoder_hidden_states.shape[0])

    def expand(self, batch_size: int) -> Conditioning:
        """A batch-1 conditioning repeated (as views, `Tensor.expand`) to `batch_size` items."""
        if self.batch_size != 1:
            raise ValueError(f"expand needs a batch-1 conditioning, got batch {self.batch_size}")
        extra = None
        if self.added_cond_kwargs is not None:
            extra = {k: v.expand(batch_size, *v.shape[1:]) for k, v in self.added_cond_kwargs.items()}
        states = self.encoder_hidden_states.expand(batch_size, -1, -1)
        return Conditioning(encoder_hidden_states=states, added_cond_kwargs=extra)


class ConditionedBackbone(Protocol):
    """What the toolkit needs from a latent diffusion backbone (`dragbench.backbone.Backbone` is one).

    Attributes used besides the two methods: `unet` (for hooks, attention processors and LoRA), `vae`,
    `scheduler` (its `config`), `device`, `dtype`, `latent_scale`, `fingerprint` (cache keys).
    """

    def condition(self, prompt: str | list[str]) -> Conditioning:
        """Encode one prompt (batch 1) or a list (batch len(list)) into a `Conditioning`."""
        ...

    def predict_noise(self, latents: Tensor, timestep: Tensor | int, cond: Conditioning) -> Tensor:
        """Epsilon prediction (B, 4, h, w) for latents (B, 4, h, w) at `timestep` under `cond`."""
        ...


def unet_noise(unet: torch.nn.Module, latents: Tensor, timestep: Tensor | int, cond: Conditioning) -> Tensor:
    """Call a diffusers UNet2DConditionModel with `cond`: the only hand-written UNet call of the toolkit.

    `added_cond_kwargs` is passed only when set, so an SD-1.x call is exactly
    `unet(x, t, encoder_hidden_states=…)`.
    """
    extra = {} if cond.added_cond_kwargs is None else {"added_cond_kwargs": cond.added_cond_kwargs}
    return unet(latents, timestep, encoder_hidden_states=cond.encoder_hidden_states, **extra).sample
