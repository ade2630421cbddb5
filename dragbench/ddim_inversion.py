"""Deterministic DDIM inversion and DDIM denoising from an intermediate timestep (SPEC §2 "inversion").

Shared by methods that edit a real image in latent space. Inversion walks the ascending DDIM timesteps
with diffusers' `DDIMInverseScheduler` (the UNet is evaluated at t, "current" alpha = that of t - step,
"next" alpha = that of t), which reproduces the official DragDiffusion inversion; denoising uses
`DDIMScheduler.step` (eta 0). No classifier-free guidance (guidance 1.0, as SPEC §2).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

log = logging.getLogger(__name__)

StepCallback = Callable[[int, int], None]  # (denoising step index, DDPM timestep) before each UNet call


def denoising_timesteps(scheduler_config: dict, n_inference_steps: int) -> torch.Tensor:
    """The descending DDIM timesteps (e.g. 981, 961, ..., 1 for 50 steps with steps_offset 1)."""
    scheduler = DDIMScheduler.from_config(scheduler_config)
    scheduler.set_timesteps(n_inference_steps)
    return scheduler.timesteps


def drag_timestep(scheduler_config: dict, n_inference_steps: int, inversion_step: int) -> int:
    """DDPM timestep after `inversion_step` inversion steps: timesteps[n - inversion_step] (681 for 35/50).

    Raises:
        ValueError: inversion_step outside 1..n_inference_steps.
    """
    if not 1 <= inversion_step <= n_inference_steps:
        raise ValueError(f"inversion_step must be in 1..{n_inference_steps}, got {inversion_step}")
    return int(denoising_timesteps(scheduler_config, n_inference_steps)[n_inference_steps - inversion_step])


def _unet_eps(unet: torch.nn.Module, latents: torch.Tensor, t: torch.Tensor,
              text_emb: torch.Tensor) -> torch.Tensor:
    return unet(latents, t, encoder_hidden_states=text_emb).sample


@torch.no_grad()
def ddim_invert(
    unet: torch.nn.Module,
    latent: torch.Tensor,
    text_emb: torch.Tensor,
    scheduler_config: dict,
    n_inference_steps: int,
    inversion_step: int,
) -> torch.Tensor:
    """Invert a clean latent z_0 to z_t by `inversion_step` deterministic DDIM inversion steps.

    Args:
        unet: noise-prediction UNet (epsilon).
        latent: (B, 4, h, w) VAE latent, already multiplied by the latent scale.
        text_emb: (B, 77, D) prompt embedding (no unconditional branch).
        scheduler_config: DDIM config (SPEC §2), e.g. `backbone.scheduler.config`.
        n_inference_steps: DDIM steps of the full schedule (50).
        inversion_step: how many of them to invert (35 -> t = 681); 0 returns the latent unchanged.

    Returns:
        (B, 4, h, w) z_t at `drag_timestep(...)`.
    """
    if not 0 <= inversion_step <= n_inference_steps:
        raise ValueError(f"inversion_step must be in 0..{n_inference_steps}, got {inversion_step}")
    scheduler = DDIMInverseScheduler.from_config(scheduler_config)
    scheduler.set_timesteps(n_inference_steps)
    for t in scheduler.timesteps[:inversion_step]:  # ascending 1, 21, ..., t
        eps = _unet_eps(unet, latent, t, text_emb)
        latent = scheduler.step(eps, t, latent).prev_sample
    return latent


@torch.no_grad()
def ddim_denoise(
    unet: torch.nn.Module,
    latents: torch.Tensor,
    text_emb: torch.Tensor,
    scheduler_config: dict,
    n_inference_steps: int,
    inversion_step: int,
    step_callback: StepCallback | None = None,
) -> torch.Tensor:
    """Denoise z_t (e.g. the batch [reference, edited]) back to z_0 with the last `inversion_step` DDIM steps.

    Args:
        unet: noise-prediction UNet (epsilon); attention processors installed by the caller apply.
        latents: (B, 4, h, w) latents at `drag_timestep(...)`.
        text_emb: (B, 77, D) prompt embeddings.
        scheduler_config: DDIM config (SPEC §2).
        n_inference_steps: DDIM steps of the full schedule (50).
        inversion_step: number of steps to run (35: timesteps 681, 661, ..., 1).
        step_callback: called as (step index from 0, timestep) before each UNet call (e.g. to tell an
            attention controller which denoising step it is in).

    Returns:
        (B, 4, h, w) denoised latents.
    """
    scheduler = DDIMScheduler.from_config(scheduler_config)
    scheduler.set_timesteps(n_inference_steps)
    for i, t in enumerate(scheduler.timesteps[n_inference_steps - inversion_step:]):
        if step_callback is not None:
            step_callback(i, int(t))
        eps = _unet_eps(unet, latents, t, text_emb)
        latents = scheduler.step(eps, t, latents).prev_sample
    return latents
