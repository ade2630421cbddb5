"""Deterministic DDIM inversion and DDIM denoising from an intermediate timestep (protocol §2 "inversion").

Shared by methods that edit a real image in latent space: `encode_image` (VAE posterior mean x scale),
`invert_image` (encode + invert, through the cache when given), `cached_inversion` / `inversion_key` (the
DragDiffusion-family inversion: attention processors and cache key from the LoRA), `ddim_invert`,
`ddim_denoise`, `decode_latents`, `to_uint8` (decoded image back to the input size, uint8). Inversion
walks the ascending DDIM timesteps with diffusers' `DDIMInverseScheduler` (the UNet is evaluated at t,
"current" alpha = that of t - step, "next" alpha = that of t), which reproduces the official DragDiffusion
inversion; denoising uses
`DDIMScheduler.step` (eta 0). No classifier-free guidance (guidance 1.0, as protocol §2).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMInverseScheduler, DDIMScheduler

from dragbench.diffusion.attention import attention_for
from dragbench.diffusion.conditioning import ConditionedBackbone, Conditioning
from dragbench.diffusion.lora_adapter import LoraStateDict, lora_digest

if TYPE_CHECKING:
    from dragbench.diffusion.precision import StagePrecision

log = logging.getLogger(__name__)

StepCallback = Callable[[int, int], None]  # (denoising step index, DDPM timestep) before each UNet call


def denoising_timesteps(scheduler_config: dict, n_inference_steps: int) -> torch.Tensor:
    """The descending DDIM timesteps (e.g. 981, 961, ..., 1 for 50 steps with steps_offset 1)."""
    scheduler = DDIMScheduler.from_config(scheduler_config)
    scheduler.set_timesteps(n_inference_steps)
    return scheduler.timesteps


def check_inversion_step(inversion_step: int, n_inference_steps: int) -> None:
    """Raise ValueError (one line, naming the knobs) unless 1 <= inversion_step <= n_inference_steps."""
    if not 1 <= inversion_step <= n_inference_steps:
        raise ValueError(
            f"inversion_step must be in 1..n_inference_steps={n_inference_steps}, got {inversion_step}: "
            "set method.inversion_step"
        )


def drag_timestep(scheduler_config: dict, n_inference_steps: int, inversion_step: int) -> int:
    """DDPM timestep after `inversion_step` inversion steps: timesteps[n - inversion_step] (681 for 35/50).

    Raises:
        ValueError: inversion_step outside 1..n_inference_steps.
    """
    check_inversion_step(inversion_step, n_inference_steps)
    return int(denoising_timesteps(scheduler_config, n_inference_steps)[n_inference_steps - inversion_step])


@torch.no_grad()
def ddim_invert(
    model: ConditionedBackbone,
    latent: torch.Tensor,
    cond: Conditioning,
    scheduler_config: dict,
    n_inference_steps: int,
    inversion_step: int,
    step_callback: StepCallback | None = None,
) -> torch.Tensor:
    """Invert a clean latent z_0 to z_t by `inversion_step` deterministic DDIM inversion steps.

    Args:
        model: the noise predictor (`predict_noise`), e.g. the `Backbone`.
        latent: (B, 4, h, w) VAE latent, already multiplied by the latent scale.
        cond: conditioning of batch B (no unconditional branch).
        scheduler_config: DDIM config (protocol §2), e.g. `backbone.scheduler.config`.
        n_inference_steps: DDIM steps of the full schedule (50).
        inversion_step: how many of them to invert (35 -> t = 681); 0 returns the latent unchanged.
        step_callback: called as (inversion step index from 0, timestep) before each UNet call (e.g. to
            let an attention controller record keys/values per timestep, as FastDrag does).

    Returns:
        (B, 4, h, w) z_t at `drag_timestep(...)`.
    """
    if not 0 <= inversion_step <= n_inference_steps:
        raise ValueError(f"inversion_step must be in 0..{n_inference_steps}, got {inversion_step}")
    scheduler = DDIMInverseScheduler.from_config(scheduler_config)
    scheduler.set_timesteps(n_inference_steps)
    for i, t in enumerate(scheduler.timesteps[:inversion_step]):  # ascending 1, 21, ..., t
        if step_callback is not None:
            step_callback(i, int(t))
        eps = model.predict_noise(latent, t, cond)
        latent = scheduler.step(eps, t, latent).prev_sample
    return latent


@torch.no_grad()
def ddim_denoise(
    model: ConditionedBackbone,
    latents: torch.Tensor,
    cond: Conditioning,
    scheduler_config: dict,
    n_inference_steps: int,
    inversion_step: int,
    step_callback: StepCallback | None = None,
) -> torch.Tensor:
    """Denoise z_t (e.g. the batch [reference, edited]) back to z_0 with the last `inversion_step` DDIM steps.

    Args:
        model: the noise predictor (`predict_noise`); attention processors installed by the caller apply.
        latents: (B, 4, h, w) latents at `drag_timestep(...)`.
        cond: conditioning of batch B.
        scheduler_config: DDIM config (protocol §2).
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
        eps = model.predict_noise(latents, t, cond)
        latents = scheduler.step(eps, t, latents).prev_sample
    return latents


@torch.no_grad()
def encode_image(backbone: ConditionedBackbone, image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> VAE posterior mean x latent scale, (1, 4, H/8, W/8)."""
    x = torch.tensor(np.asarray(image)).float() / 127.5 - 1  # (H, W, 3) in [-1, 1]
    x = x.permute(2, 0, 1)[None].to(backbone.device, backbone.dtype)  # (1, 3, H, W)
    return backbone.vae.encode(x).latent_dist.mean * backbone.latent_scale


@torch.no_grad()
def decode_latents(backbone: ConditionedBackbone, latents: torch.Tensor) -> torch.Tensor:
    """(B, 4, h, w) scaled latents -> (B, 3, 8h, 8w) images in [0, 1] (clamped)."""
    images = backbone.vae.decode(latents * (1 / backbone.latent_scale)).sample  # in [-1, 1]
    return (images / 2 + 0.5).clamp(0, 1)


def to_uint8(
    image_float: torch.Tensor, image_hw: tuple[int, int], rounding: Literal["truncate", "round"] = "truncate"
) -> np.ndarray:
    """A decoded image back to the input: (1, 3, h, w) in [0, 1] -> (H, W, 3) uint8.

    Bilinearly resized when (h, w) differs from `image_hw` (a same-size bilinear resize is the identity,
    exactly), then x255 and `rounding`: "truncate" as the official DragDiffusion-family scripts
    (`astype(uint8)`), "round" = +0.5 then truncation, as torchvision's `save_image` (SDE-Drag).
    """
    if rounding not in ("truncate", "round"):
        raise ValueError(f"rounding={rounding!r}: choose 'truncate' or 'round'")
    image = image_float.float()
    if tuple(image.shape[-2:]) != tuple(image_hw):
        image = F.interpolate(image, image_hw, mode="bilinear")  # (1, 3, H, W)
    if rounding == "round":
        scaled = image[0].mul(255).add(0.5).clamp(0, 255)  # (3, H, W)
        return scaled.permute(1, 2, 0).to(torch.uint8).cpu().numpy()
    return (image[0].permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)


def inversion_key(
    prompt: str, lora_state: LoraStateDict | None, precision: StagePrecision | None = None
) -> dict[str, Any]:
    """What `invert_image`'s cache key records beyond the image and model, for a DragDiffusion-family inversion:
    the prompt, the LoRA applied (digest), the attention processors `attention_for` picks, and the autocast
    dtype when there is one. Methods that invert alike build the same key, so they share the cached latent."""
    key: dict[str, Any] = {
        "prompt": prompt,
        "lora_sha256": None if lora_state is None else lora_digest(lora_state),
        "attention": "classic" if lora_state is None else "sdpa",
    }
    if precision is not None and precision.autocast is not None:
        key["autocast"] = str(precision.autocast)
    return key


def cached_inversion(
    backbone: ConditionedBackbone,
    image: np.ndarray,
    prompt: str,
    n_inference_steps: int,
    inversion_step: int,
    lora_state: LoraStateDict | None = None,
    cache: Any | None = None,
    precision: StagePrecision | None = None,
) -> torch.Tensor:
    """`invert_image` as the DragDiffusion-family code runs it: z_t (1, 4, h, w).

    Runs under `attention_for(unet, lora_state is not None)` and `precision`'s autocast (if any), conditioned
    on `prompt`, keyed by `inversion_key`. `lora_state` only enters the key: the caller applies the LoRA.
    """
    key = inversion_key(prompt, lora_state, precision)
    autocast = contextlib.nullcontext() if precision is None else precision.autocast_context(backbone.device.type)
    with attention_for(backbone.unet, lora_state is not None), autocast:
        cond = backbone.condition(prompt)
        return invert_image(backbone, image, cond, n_inference_steps, inversion_step, cache=cache, key=key)


def invert_image(
    backbone: ConditionedBackbone,
    image: np.ndarray,
    cond: Conditioning,
    n_inference_steps: int,
    inversion_step: int,
    cache: Any | None = None,
    key: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Encode `image` and DDIM-invert it `inversion_step` of `n_inference_steps` steps: z_t (1, 4, h, w).

    The caller installs whatever changes the UNet (LoRA, attention processors, autocast) and names it in
    `key`. With a cache the entry's key is the image content (sha256, never a sample id), the model
    fingerprint, device, dtype, the two step counts and `key`; its code part comes from this module.

    Args:
        backbone: the noise predictor with its VAE.
        image: uint8 (H, W, 3).
        cond: conditioning of batch 1.
        n_inference_steps, inversion_step: as `ddim_invert`.
        cache: a `dragbench.cache.Cache` (or anything with its `get_or_compute`), or None.
        key: what else determines the result (e.g. prompt, LoRA digest, attention processors).
    """

    def compute() -> dict[str, torch.Tensor]:
        latent = encode_image(backbone, image)
        z = ddim_invert(backbone, latent, cond, backbone.scheduler.config, n_inference_steps, inversion_step)
        return {"latent": z.detach().cpu()}

    if cache is None:
        return compute()["latent"].to(backbone.device)
    inputs = {
        "image_sha256": sha256_array(image),
        **(key or {}),
        "model": backbone.fingerprint,
        "device": str(backbone.device),
        "dtype": str(backbone.dtype),
        "n_inference_steps": n_inference_steps,
        "inversion_step": inversion_step,
    }
    # code part: this module (encoding, DDIM) and the backbone's (conditioning, noise prediction)
    producers = (__name__, type(backbone).__module__)
    entry = cache.get_or_compute("inversion", inputs, compute, producers=producers)
    return entry["latent"].to(backbone.device)


def sha256_array(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes (image content in cache keys)."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()
