"""SDE-Drag on a real image (protocol §10): LoRA -> per chunk: stochastic forward to t0, copy-and-paste, Cycle-SDE
backward -> decode.

Reproduces the official DragBench path (`sdedrag_dragbench.py` of ML-GSAI/SDE-Drag 881364a) on our toolkit:
the backbone's conditioning (an unconditional and a text branch for CFG), its scheduler's ᾱ and VAE, and
the toolkit LoRA trainer (`dragbench.diffusion.lora`) with a per-step adapter scale. What is SDE-Drag's own
is `cycle_sde.py` (the exact-inversion SDE) and `copy_paste.py` (chunks and the latent patch edit).
`tests/data/official_sdedrag_ref/README.md` lists how it was matched against the official code.

A DragBench(-D) sample is given to SDE-Drag as its DragBench-S input would be: the image at its own size
(DragBench-S images are 512 × 512; other sizes run as the official `utils/drag.py` does, latent grid =
image / 8), the mask as a 0/255 image, handles and targets as source / target pixel points, the prompt.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dragbench.backbone import Backbone
from dragbench.diffusion.conditioning import Conditioning
from dragbench.diffusion.ddim import decode_latents, to_uint8
from dragbench.diffusion.lora import PerImageLora
from dragbench.diffusion.lora_adapter import adapter_scale
from dragbench.sample import DragSample
from dragbench.validation import validate_sample
from methods.base import EditResult, StageTimes, required_info, reset_peak_memory
from methods.sdedrag.copy_paste import copy_and_paste, drag_chunks, latent_mask, pixel_to_latent_xy
from methods.sdedrag.cycle_sde import (
    backward_step,
    forward_step,
    guided_noise,
    scale_schedule,
    sde_timesteps,
    step_delta,
)

log = logging.getLogger(__name__)

LORA_BATCH_SIZE = 1  # official utils/train_lora.py: the one image per step, no augmentation


@dataclass
class ForwardRecord:
    """The forward pass of one chunk: latents[k] at grid level k (latents[0] = the chunk's input)."""

    latents: list[torch.Tensor]
    timesteps: list[int]  # the forward step k goes from timesteps[k] to timesteps[k] + Δ


@dataclass
class SDEDragTrace:
    """Every intermediate of one edit (for tests and the official-ref comparison).

    Attributes:
        latent0: (1, 4, h, w) scaled VAE posterior sample of the input.
        chunks: per chunk, {"source", "target": int64 (N, 2) (x, y) latent cells, "x_t0": the forward
            latent at t0, "pasted": after copy-and-paste, "x_out": after the backward SDE}.
        mask: bool (h, w) editable latent cells.
        edited_float: (1, 3, 8h, 8w) decoded edit in [0, 1].
        image: (H, W, 3) uint8 output.
        times: seconds per stage.
    """

    latent0: torch.Tensor
    chunks: list[dict[str, torch.Tensor]]
    mask: torch.Tensor
    edited_float: torch.Tensor
    image: np.ndarray
    times: dict[str, float] = field(default_factory=dict)


class SDEDrag:
    """SDE-Drag with the official DragBench defaults (protocol §10); keys = conf/method/sdedrag.yaml.

    Args:
        backbone: SD-1.5-shaped models (real or tiny); shared and left unmodified.
        steps: SDE discretisation of [0, T] (200).
        t0: fraction of the grid noised before the paste (0.6: 120 of 200 steps, up to t = 599).
        step_size: latent pixels per drag chunk (2).
        r: half side of the copied latent patch (5: 10 × 10).
        alpha: scale of the pasted target patch (1.1).
        beta: share of the source signal kept in the source patch (0.3); the rest is fresh noise.
        guidance_scale: CFG at t0; it rises linearly from 1 at t = 0 (3).
        lora_steps: identity LoRA fine-tuning steps (100; 0 = no LoRA).
        lora_rank: LoRA rank (4; alpha = rank, diffusers' LoRAAttnProcessor without network_alpha).
        lora_lr: LoRA AdamW learning rate (2e-4).
        lora_scale_min: LoRA scale at t0; it falls from 1 at t = 0 along a cosine (0.5).
        seed: seeds the one generator of every noise draw (posterior sample, forward noise, source-patch
            noise, in the official order) and of the LoRA training (1234).
        cache: optional content-addressed cache for the LoRA weights.
    """

    display_name = "SDE-Drag"  # the paper's spelling in comparison tables (experiments.compare)

    def __init__(
        self,
        backbone: Backbone,
        steps: int = 200,
        t0: float = 0.6,
        step_size: float = 2.0,
        r: int = 5,
        alpha: float = 1.1,
        beta: float = 0.3,
        guidance_scale: float = 3.0,
        lora_steps: int = 100,
        lora_rank: int = 4,
        lora_lr: float = 2e-4,
        lora_scale_min: float = 0.5,
        seed: int = 1234,
        cache: Any | None = None,
    ) -> None:
        n_t0 = int(t0 * steps)
        if not 2 <= n_t0 < steps:
            raise ValueError(f"int(t0 * steps) must be in 2..steps-1, got t0={t0}, steps={steps}; set method.t0")
        if not 0 <= beta <= 1:
            raise ValueError(f"beta must be in [0, 1] (share of the source signal kept), got {beta}")
        if guidance_scale < 1 or step_size <= 0 or r < 1 or lora_steps < 0:
            raise ValueError(
                f"need guidance_scale >= 1, step_size > 0, r >= 1, lora_steps >= 0; got {guidance_scale}, "
                f"{step_size}, {r}, {lora_steps}"
            )
        self.backbone = backbone
        self.steps = steps
        self.t0 = t0
        self.step_size = step_size
        self.r = r
        self.alpha = alpha
        self.beta = beta
        self.guidance_scale = guidance_scale
        self.lora_scale_min = lora_scale_min
        self.seed = seed
        self.lora = PerImageLora(lora_steps, lora_rank, lora_lr, LORA_BATCH_SIZE, seed)
        self.cache = cache
        if cache is not None:
            _ = backbone.fingerprint  # read once now, before any LoRA adapter is applied to the shared UNet

    # ------------------------------------------------------------------ public API
    def edit(self, sample: DragSample) -> EditResult:
        """Drag-edit one sample; returns the edited image (input H x W) and info (no point tracking)."""
        reset_peak_memory(self.backbone.device)
        trace = self.run(sample)
        info = {
            **required_info(trace.times, len(trace.chunks), self.backbone.device),
            "chunks": len(trace.chunks),
            "unet_calls": len(trace.chunks) * len(self.backward_timesteps),
            "latent_hw": list(trace.latent0.shape[-2:]),
            "mask_latent_cells": int(trace.mask.sum()),
            "weights": self.backbone.weights,
        }
        return EditResult(image=trace.image, handles=None, info=info)

    def run(self, sample: DragSample) -> SDEDragTrace:
        """The whole edit, returning every intermediate (`edit` packages this)."""
        # 0. validate; one generator for every draw of the edit, in the official order
        validate_sample(sample)
        bb = self.backbone
        generator = torch.Generator().manual_seed(self.seed)
        times = StageTimes()
        # 1. per-image LoRA (toolkit trainer; rank 4, 100 steps, one uncropped image per step)
        with times.stage("lora"):
            lora_state = self.lora.train(bb, sample.image, sample.prompt, self.cache)
        with self.lora.applied(bb.unet, lora_state):
            # 2. VAE posterior sample (the official draws it: the first noise of the stream), conditioning
            with times.stage("encode"):
                latent0 = self.encode(sample.image, generator)
                cond = self.conditioning(sample.prompt)
            h, w = latent0.shape[-2:]
            mask = latent_mask(sample.mask, (h, w)).to(bb.device)
            if not np.asarray(sample.mask).any():  # DragSample: an empty mask sets no region -> edit anywhere
                mask = torch.ones_like(mask)
            source = pixel_to_latent_xy(sample.handles, bb.vae_scale_factor, (h, w))
            target = pixel_to_latent_xy(sample.targets, bb.vae_scale_factor, (h, w))
            # 3. per chunk: forward SDE to t0, copy-and-paste, Cycle-SDE backward blended outside the mask
            chunks = []
            latent = latent0
            with times.stage("drag"):
                for chunk_source, chunk_target in drag_chunks(source, target, self.step_size):
                    record = self.forward(latent, generator)
                    pasted = copy_and_paste(
                        record.latents[-1],
                        chunk_source,
                        chunk_target,
                        self.r,
                        self.alpha,
                        self.beta,
                        lambda shape: torch.randn(shape, generator=generator).to(bb.device, bb.dtype),
                    )
                    latent = self.backward(pasted, record, cond, mask, lora_state is not None)
                    chunks.append(
                        {
                            "source": chunk_source,
                            "target": chunk_target,
                            "x_t0": record.latents[-1],
                            "pasted": pasted,
                            "x_out": latent,
                        }
                    )
        # 4. decode, back to the input size, uint8 by rounding (torchvision save_image, as official)
        with times.stage("decode"):
            edited_float = decode_latents(bb, latent)
            image = to_uint8(edited_float, (sample.height, sample.width), rounding="round")
        log.info("%s: %d chunks, %.1fs", sample.sample_id, len(chunks), sum(times.seconds.values()))
        return SDEDragTrace(latent0, chunks, mask, edited_float, image, dict(times.seconds))

    # ------------------------------------------------------------------ the steps
    @property
    def grid(self) -> list[int]:
        """The descending SDE timestep grid (999, ..., 5 for 200 steps)."""
        return sde_timesteps(int(self.backbone.scheduler.config.num_train_timesteps), self.steps)

    @property
    def n_t0(self) -> int:
        """Grid steps noised before the paste (120 = int(0.6 · 200))."""
        return int(self.t0 * self.steps)

    @property
    def forward_timesteps(self) -> list[int]:
        """Ascending starts of the forward steps: the last n_t0 grid entries (5, 10, ..., 599)."""
        return self.grid[self.steps - self.n_t0 :][::-1]

    @property
    def backward_timesteps(self) -> list[int]:
        """Descending backward steps (604, ..., 10): one grid entry above the forward starts, as official."""
        return self.grid[self.steps - self.n_t0 - 1 : -1]

    def _alpha_bar(self, t: int) -> torch.Tensor:
        return self.backbone.scheduler.alphas_cumprod[t].to(self.backbone.device)

    @torch.no_grad()
    def encode(self, image: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        """uint8 (H, W, 3) -> scaled VAE posterior *sample* (1, 4, H/8, W/8), noise from `generator`."""
        bb = self.backbone
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255  # (1, 3, H, W), a copy
        posterior = bb.vae.encode((x * 2 - 1).to(bb.device, bb.dtype)).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator).to(bb.device, bb.dtype)
        return (posterior.mean + posterior.std * noise) * bb.latent_scale

    @torch.no_grad()
    def conditioning(self, prompt: str) -> Conditioning:
        """Batch [uncond, text, uncond, text] for one UNet call on [x, x, recorded, recorded].

        Each prompt is encoded alone (batch 1), as the official `get_text_embed` calls.
        """
        uncond, text = self.backbone.condition(""), self.backbone.condition(prompt)
        order = [uncond, text, uncond, text]
        states = torch.cat([c.encoder_hidden_states for c in order])  # (4, L, D)
        extra = None
        if text.added_cond_kwargs is not None:
            extra = {k: torch.cat([c.added_cond_kwargs[k] for c in order]) for k in text.added_cond_kwargs}
        return Conditioning(encoder_hidden_states=states, added_cond_kwargs=extra)

    def forward(self, latent: torch.Tensor, generator: torch.Generator) -> ForwardRecord:
        """Noise `latent` (taken as the level of the lowest grid entry) up to t0, recording every latent."""
        bb = self.backbone
        delta = step_delta(int(bb.scheduler.config.num_train_timesteps), self.steps)
        latents = [latent]
        for t in self.forward_timesteps:
            noise = torch.randn(latent.shape, generator=generator).to(bb.device, bb.dtype)
            latent = forward_step(latent, self._alpha_bar(t), self._alpha_bar(t + delta), noise)
            latents.append(latent)
        return ForwardRecord(latents=latents, timesteps=self.forward_timesteps)

    @torch.no_grad()
    def backward(
        self, latent: torch.Tensor, record: ForwardRecord, cond: Conditioning, mask: torch.Tensor, lora: bool
    ) -> torch.Tensor:
        """Cycle-SDE from t0 back down with the recorded noises; outside `mask` the forward latents are kept.

        The backward step from grid entry t undoes forward step k (counted from the clean end), whose CFG
        and LoRA scales were set at position k + 1 of N - 1 (N = n_t0 steps; official `forward`).
        """
        bb = self.backbone
        delta = step_delta(int(bb.scheduler.config.num_train_timesteps), self.steps)
        n = len(record.timesteps)
        for i, t in enumerate(self.backward_timesteps):
            k = n - 1 - i  # the forward step this one undoes
            cfg = scale_schedule(1, self.guidance_scale, k + 1, n - 1, "linear")
            lora_scale = scale_schedule(1, self.lora_scale_min, k + 1, n - 1, "cos")
            recorded_before, recorded_after = record.latents[k], record.latents[k + 1]
            batch = torch.cat([latent, latent, recorded_after, recorded_after])  # (4, 4, h, w)
            with adapter_scale(bb.unet, lora_scale) if lora else contextlib.nullcontext():
                eps_u, eps_c, rec_u, rec_c = bb.predict_noise(batch, t, cond).chunk(4)
            latent = backward_step(
                latent,
                guided_noise(eps_u, eps_c, cfg),
                recorded_before,
                recorded_after,
                guided_noise(rec_u, rec_c, cfg),
                self._alpha_bar(t),
                self._alpha_bar(t - delta),
            )
            latent = torch.where(mask, latent, recorded_before)  # (1, 4, h, w); mask (h, w) broadcasts
        return latent
