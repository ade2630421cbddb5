"""DIFT diffusion features for Mean Distance (protocol §3; Tang et al. 2023, as used by DragDiffusion's
`drag_bench_evaluation/run_eval_point_matching.py` + `dift_sd.py`): one noisy, prompt-conditioned UNet pass,
output of `up_blocks[1]`, averaged over an ensemble of 8 noisy copies.

Image size: like the official script, the image goes in at its native size (no crop, pad or resize). Sizes
that are not multiples of 8 need nothing special: the diffusers VAE encoder pads (0, 1, 0, 1) before each
stride-2 conv (latent = floor(H/8), e.g. 341 -> 42) and the UNet forwards explicit upsample
sizes on odd grids.
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from dragbench.backbone import Backbone
from dragbench.diffusion.features import UNetFeatureHooks

log = logging.getLogger(__name__)

DIFT_TIMESTEP = 261  # protocol §3; run_eval_point_matching.py calls dift.forward(..., t=261)
DIFT_UP_FT_INDEX = 1  # protocol §3; up_ft_index=1, i.e. unet.up_blocks[1] (0-based, no mid block in the list)
DIFT_ENSEMBLE_SIZE = 8  # protocol §3; ensemble_size=8 noisy copies in one batch, features averaged
DIFT_SEED = 42  # protocol §3; the official script calls seed_everything(42)


@runtime_checkable
class Featurizer(Protocol):
    """Anything that maps an image + prompt to a dense feature map.

    Attributes:
        weights: "real" or "random" (labels every score computed with it).
    """

    weights: str

    def __call__(self, image: np.ndarray, prompt: str) -> Tensor:
        """uint8 (H, W, 3) RGB image + its prompt -> features (C, h, w) on any grid."""
        ...


def image_to_tensor(image: np.ndarray) -> Tensor:
    """uint8 (H, W, 3) -> float32 (1, 3, H, W) in [−1, 1], as `(x / 255 − 0.5) × 2` in the official script."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    x = torch.tensor(image).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
    return (x / 255.0 - 0.5) * 2.0


class DiftFeaturizer:
    """DIFT features from a (real or tiny) SD backbone.

    Each call draws, from a CPU generator seeded with `seed`, the `ensemble_size` VAE posterior samples
    (`latent_dist.sample()`: mean + std · ε) and the forward-diffusion noise, so a call's output depends only
    on (image, prompt, backbone, these settings) — never on what was featurized before. (The official script
    seeds once per run, so its noise depends on the sample order; that order dependence is not reproduced.)
    The deterministic encoder runs once; the ensemble is one batched UNet pass.

    Args:
        backbone: SD components (`load_pretrained(...)` for SD-2.1, `build_tiny(...)` offline). Not mutated.
        t: DDPM timestep the latents are noised to (scheduler's `add_noise`).
        up_ft_index: 0-based index into `unet.up_blocks` whose output is the feature.
        ensemble_size: noisy copies averaged.
        seed: seed of the per-call generator.
    """

    def __init__(
        self,
        backbone: Backbone,
        t: int = DIFT_TIMESTEP,
        up_ft_index: int = DIFT_UP_FT_INDEX,
        ensemble_size: int = DIFT_ENSEMBLE_SIZE,
        seed: int = DIFT_SEED,
    ) -> None:
        n_train = backbone.scheduler.config.num_train_timesteps
        if not 0 <= t < n_train:
            raise ValueError(f"DIFT timestep t={t} outside the scheduler's [0, {n_train})")
        if not 0 <= up_ft_index < len(backbone.unet.up_blocks):
            n_up = len(backbone.unet.up_blocks)
            raise ValueError(f"up_ft_index={up_ft_index} out of range: the UNet has {n_up} up_blocks")
        if ensemble_size < 1:
            raise ValueError(f"ensemble_size must be >= 1, got {ensemble_size}")
        self.backbone = backbone
        self.t, self.up_ft_index = int(t), int(up_ft_index)
        self.ensemble_size, self.seed = int(ensemble_size), int(seed)

    @property
    def weights(self) -> str:
        return self.backbone.weights

    @property
    def cache_inputs(self) -> dict:
        """Everything besides (image, prompt) that determines the output: part of the feature cache key."""
        return dict(
            featurizer="dift",
            model=self.backbone.fingerprint,
            device=str(self.backbone.device),
            dtype=str(self.backbone.dtype),
            t=self.t,
            up_ft_index=self.up_ft_index,
            ensemble_size=self.ensemble_size,
            seed=self.seed,
        )

    @torch.no_grad()
    def __call__(self, image: np.ndarray, prompt: str) -> Tensor:
        """uint8 (H, W, 3) image + prompt -> float32 (C, h, w) features on the backbone's device."""
        bb, e = self.backbone, self.ensemble_size
        generator = torch.Generator().manual_seed(self.seed)
        x = image_to_tensor(image).to(bb.device, bb.dtype)  # (1, 3, H, W)
        posterior = bb.vae.encode(x).latent_dist
        mean, std = posterior.mean, posterior.std  # (1, 4, h8, w8) each
        eps = torch.randn((e, *mean.shape[1:]), generator=generator).to(bb.device, bb.dtype)  # (E, 4, h8, w8)
        latents = (mean + std * eps) * bb.latent_scale  # (E, 4, h8, w8): latent_dist.sample() × scaling
        noise = torch.randn(latents.shape, generator=generator).to(bb.device, bb.dtype)  # (E, 4, h8, w8)
        timesteps = torch.full((e,), self.t, dtype=torch.long, device=bb.device)  # (E,)
        noisy = bb.scheduler.add_noise(latents, noise, timesteps)  # (E, 4, h8, w8)
        cond = bb.condition(prompt).expand(e)  # the prompt for each of the E ensemble members
        with UNetFeatureHooks(bb.unet, [self.up_ft_index]) as hooks:
            # registered after the recording hook, so it fires once the feature is stored
            stop = bb.unet.up_blocks[self.up_ft_index].register_forward_hook(_stop_forward)
            try:
                bb.predict_noise(noisy, timesteps, cond)
            except _FeatureReady:  # the later up blocks and conv_out are not needed (the official code
                pass  # also breaks out of its up-block loop after the last wanted index)
            finally:
                stop.remove()
            feats = hooks.features[self.up_ft_index]  # (E, C, h, w)
        return feats.float().mean(dim=0)  # (C, h, w): ensemble average


class _FeatureReady(Exception):
    """Control flow only: raised by `_stop_forward` to skip the rest of the UNet once the feature is in."""


def _stop_forward(_module: torch.nn.Module, _inputs: object, _output: object) -> None:
    raise _FeatureReady
