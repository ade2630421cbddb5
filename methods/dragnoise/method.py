"""DragNoise (Liu et al., CVPR 2024) on a real image (protocol §8): LoRA -> DDIM inversion -> bottleneck drag ->
denoising with the dragged bottleneck injected.

A composition of `dragbench.diffusion` pieces (`DragNoise.run` numbers the steps). DragNoise's own parts: the
optimised variable is the UNet's mid-block output at the drag timestep ("bottleneck", `bottleneck.py`), not z_t;
the final denoising starts from the unchanged z_t and replaces the mid-block output by the dragged bottleneck
at every step before `end_step`; the mask term is always on. Point tracking, motion supervision, the supervision
grid, inversion and LoRA are DragDiffusion's (the official code is built on it).

Reproduces the official DragBench path (haofengl/DragNoise 1072731, `drag_bench_evaluation/run_drag_diffusion.py`
-> `utils/drag_utils.py`, `drag_pipeline.py`); `tests/test_dragnoise_official_ref.py` checks the numbers against
`tests/data/official_dragnoise_ref`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dragbench.backbone import Backbone
from dragbench.diffusion.attention import attention_for
from dragbench.diffusion.bottleneck import MidBlockOverride
from dragbench.diffusion.ddim import (
    check_inversion_step,
    ddim_denoise,
    decode_latents,
    to_uint8,
)
from dragbench.diffusion.drag_loop import DragLoopResult, drag_latent
from dragbench.diffusion.features import UNetFeatureHooks, check_unet_block
from dragbench.diffusion.lora import PerImageLora
from dragbench.diffusion.mask_term import mask_to_latent
from dragbench.diffusion.motion_supervision import PatchMotionSupervision
from dragbench.diffusion.point_tracking import NearestNeighbourTracker
from dragbench.diffusion.precision import PrecisionPlan, require_float32_weights, resolve_precision
from dragbench.sample import DragSample
from dragbench.validation import validate_sample
from methods.base import StageTimes
from methods.timestep_drag import TimestepDrag

log = logging.getLogger(__name__)


@dataclass
class DragNoiseTrace:
    """Every intermediate of one edit (for tests and the official-ref comparison).

    Attributes:
        inverted: (1, 4, h, w) z_t after DDIM inversion.
        bottleneck0: (1, C, h', w') mid-block output on z_t at the drag timestep (before the drag).
        drag: the drag loop's outcome; `drag.latent` is the dragged bottleneck.
        handles_init_rc, targets_rc: (N, 2) float32 points on the supervision grid (row, col).
        grid_hw: (h, w) of the supervision grid.
        timestep: DDPM timestep of the drag (681 for 35 of 50).
        edited_float: (1, 3, 8h, 8w) decoded edit in [0, 1] before resizing.
        image: (H, W, 3) uint8 output.
        times: seconds per stage.
    """

    inverted: torch.Tensor
    bottleneck0: torch.Tensor
    drag: DragLoopResult
    handles_init_rc: torch.Tensor
    targets_rc: torch.Tensor
    grid_hw: tuple[int, int]
    timestep: int
    edited_float: torch.Tensor
    image: np.ndarray
    times: dict[str, float] = field(default_factory=dict)


class DragNoise(TimestepDrag):
    """DragNoise with the official DragBench defaults (protocol §8); keys = conf/method/dragnoise.yaml.

    Args:
        backbone: SD-1.5-shaped models (real or tiny); shared and left unmodified.
        inversion_step: DDIM steps inverted (35 of 50 = inversion strength 0.7 -> t = 681).
        n_inference_steps: DDIM schedule length (50).
        end_step: the dragged bottleneck replaces the mid-block output at every denoising step whose index in
            the full schedule is < n_inference_steps - end_step (0 = at every step, the bench value).
        unet_block: 1-based decoder block whose output are the features (3 = official feature index 3).
        bottleneck_lr: Adam learning rate on the bottleneck (the official argument is named `latent_lr`).
        max_iters: drag-loop iterations at most (official `n_pix_step`).
        r1: motion-supervision patch radius (supervision-grid px).
        r2: point-tracking search radius (grid px).
        lam: mask-term weight (always added, also for an empty mask, as the official loop).
        stop_distance: all handles closer than this (grid px) -> stop; closer pairs are not supervised.
        lora_steps: LoRA fine-tuning steps (0 = no LoRA).
        lora_rank: LoRA rank (alpha = rank).
        lora_lr: LoRA AdamW learning rate.
        lora_batch_size: LoRA batch size.
        lora_plan_steps: the other LoRA step counts of the sweep this job belongs to (cost only): with a cache
            the first job of a sample trains once to the largest count and stores every snapshot.
        seed: torch seed set before every sample.
        cache: optional content-addressed cache for LoRA snapshots and inverted latents.
        precision: numeric precision per stage (`dragbench.diffusion.precision`): "official_fp16" = the
            official scripts' casting (LoRA under fp16 mixed precision, drag loop under fp16 autocast +
            GradScaler, inversion and denoising fp32), "fp32", or "auto" (official_fp16 on CUDA, else fp32).
    """

    def __init__(
        self,
        backbone: Backbone,
        inversion_step: int = 35,
        n_inference_steps: int = 50,
        end_step: int = 0,
        unet_block: int = 3,
        bottleneck_lr: float = 0.02,
        max_iters: int = 80,
        r1: int = 1,
        r2: int = 3,
        lam: float = 0.2,
        stop_distance: float = 2.0,
        lora_steps: int = 200,
        lora_rank: int = 16,
        lora_lr: float = 2e-4,
        lora_batch_size: int = 4,
        lora_plan_steps: list[int] | None = None,
        seed: int = 42,
        cache: Any | None = None,
        precision: str = "auto",
    ) -> None:
        self.block_index = check_unet_block(backbone.unet, unet_block)  # up_blocks index of the knob
        check_inversion_step(inversion_step, n_inference_steps)
        if not 0 <= end_step <= n_inference_steps:
            raise ValueError(f"end_step must be in 0..n_inference_steps={n_inference_steps}, got {end_step}")
        self.precision_plan: PrecisionPlan = resolve_precision(precision, backbone.device)
        require_float32_weights(backbone, "DragNoise")
        self.backbone = backbone
        self.inversion_step = inversion_step
        self.n_inference_steps = n_inference_steps
        self.end_step = end_step
        self.unet_block = unet_block
        self.bottleneck_lr = bottleneck_lr
        self.max_iters = max_iters
        self.r1 = r1
        self.r2 = r2
        self.lam = lam
        self.stop_distance = stop_distance
        self.seed = seed
        self.lora = PerImageLora(
            lora_steps, lora_rank, lora_lr, lora_batch_size, seed, plan_steps=tuple(lora_plan_steps or ())
        )
        self.cache = cache
        if cache is not None:
            _ = backbone.fingerprint  # read once now, before any LoRA adapter is applied to the shared UNet
        self.precision = precision

    # ------------------------------------------------------------------ public API
    def edit_info(self, sample: DragSample, trace: DragNoiseTrace) -> dict[str, Any]:
        """DragNoise's own info keys (`edit`, in TimestepDrag, adds the shared ones)."""
        return {"bottleneck_shape": list(trace.bottleneck0.shape)}

    def run(self, sample: DragSample) -> DragNoiseTrace:
        """The whole edit, returning every intermediate (`edit` packages this)."""
        # 0. validate and seed (as the official script: 42 before every sample)
        validate_sample(sample)
        torch.manual_seed(self.seed)
        times = StageTimes()
        grid_hw, handles_rc, targets_rc = self.grid_points(sample)
        # 1. per-image LoRA: train or fetch the snapshot (dragbench.diffusion.lora, cached)
        with times.stage("lora"):
            lora_state = self.lora.train(
                self.backbone, sample.image, sample.prompt, self.cache, self.precision_plan.lora
            )
        # ... applied to the shared UNet for steps 2-4, removed on exit; without LoRA every stage runs the
        # classic attention processor (official `set_default_attn_processor`), with LoRA the loaded ones
        unet = self.backbone.unet
        with self.lora.applied(unet, lora_state), attention_for(unet, lora_state is not None):
            # 2. DDIM inversion to t (dragbench.diffusion.ddim, cached)
            with times.stage("inversion"):
                inverted = self.invert(sample, lora_state)
            # 3. drag the bottleneck at t (dragbench.diffusion.drag_loop over dragbench.diffusion.bottleneck)
            with times.stage("drag"):
                bottleneck0, drag = self.drag(sample, inverted)
            # 4. denoise the unchanged z_t with the dragged bottleneck injected
            with times.stage("denoise"):
                edited_float = self.denoise(sample.prompt, inverted, drag.latent)
        # 5. back to the input size, uint8 by truncation (as official)
        image = to_uint8(edited_float, (sample.height, sample.width))
        log.info("%s: %d drag iterations, reached=%s", sample.sample_id, drag.iterations, drag.reached)
        return DragNoiseTrace(
            inverted=inverted,
            bottleneck0=bottleneck0,
            drag=drag,
            handles_init_rc=handles_rc,
            targets_rc=targets_rc,
            grid_hw=grid_hw,
            timestep=self.timestep,
            edited_float=edited_float,
            image=image,
            times=dict(times.seconds),
        )

    def drag(self, sample: DragSample, inverted: torch.Tensor) -> tuple[torch.Tensor, DragLoopResult]:
        """Optimise the bottleneck at `self.timestep` so the handles' features move to the targets.

        Every iteration runs the UNet on the unchanged z_t with the mid-block output replaced by the current
        bottleneck (official `drag_diffusion_update`). Attention processors and LoRA are the caller's.

        Returns:
            (bottleneck before the drag (1, C, h', w'), the loop's result; its `latent` is the dragged bottleneck).
        """
        bb = self.backbone
        grid_hw, handles_rc, targets_rc = self.grid_points(sample)
        mask = torch.tensor(np.asarray(sample.mask), device=bb.device)
        mask_latent = mask_to_latent(mask, grid_hw, tuple(inverted.shape[-2:]))  # (1, 1, h, w)
        cond = bb.condition(sample.prompt)  # batch 1
        t = self.timestep
        block = self.block_index
        scheduler = bb.fresh_scheduler()
        scheduler.set_timesteps(self.n_inference_steps)
        with UNetFeatureHooks(bb.unet, [block]) as hooks, MidBlockOverride(bb.unet) as bottleneck:
            with torch.no_grad():
                bb.predict_noise(inverted, t, cond)
            bottleneck0 = bottleneck.captured.detach().clone()  # (1, C, h', w')

            def forward(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                bottleneck.replacement = h
                eps = bb.predict_noise(inverted, t, cond)
                feats = F.interpolate(hooks.features[block], grid_hw, mode="bilinear")  # (1, C, gh, gw)
                x_prev = scheduler.step(eps, t, inverted).prev_sample  # (1, 4, h, w)
                return feats, x_prev

            drag = drag_latent(
                bottleneck0,
                forward,
                handles_rc,
                targets_rc,
                mask_latent,
                lr=self.bottleneck_lr,
                max_iters=self.max_iters,
                lam=self.lam,
                stop_distance=self.stop_distance,
                tracker=NearestNeighbourTracker(radius=self.r2),
                motion_loss=PatchMotionSupervision(radius=self.r1, skip_distance=self.stop_distance),
                precision=self.precision_plan.drag,
                mask_term_always=True,  # official: `loss += lam * ...` with no empty-mask check
            )
        return bottleneck0, drag

    @torch.no_grad()
    def denoise(self, prompt: str, inverted: torch.Tensor, bottleneck: torch.Tensor) -> torch.Tensor:
        """Denoise the unchanged z_t with `bottleneck` as the mid-block output before `end_step`; decode.

        The official call denoises the batch [z_t, z_t] with the same bottleneck in both entries, so its two
        branches are the same image (up to batch arithmetic, ~1e-5); one entry is denoised here. Its rule
        `i < 50 - end_step` (50 hard-coded) is `i < n_inference_steps - end_step` here: equal at 50 steps.

        Returns:
            (1, 3, 8h, 8w) edited image in [0, 1].
        """
        bb = self.backbone
        cond = bb.condition(prompt)
        first = self.n_inference_steps - self.inversion_step  # index of t in the full schedule
        last_injected = self.n_inference_steps - self.end_step  # steps with index < this get the bottleneck
        with MidBlockOverride(bb.unet) as override, self.precision_plan.denoise.autocast_context(bb.device.type):

            def on_step(i: int, _t: int) -> None:
                override.replacement = bottleneck if first + i < last_injected else None

            latents = ddim_denoise(
                bb,
                inverted,
                cond,
                bb.scheduler.config,
                self.n_inference_steps,
                self.inversion_step,
                step_callback=on_step,
            )
        return decode_latents(bb, latents)
