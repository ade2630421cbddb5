"""DragDiffusion on a real image (protocol §2): LoRA -> DDIM inversion -> latent drag -> guided denoising.

A composition of `dragbench.diffusion` pieces (`DragDiffusion.run` numbers the steps); what is
DragDiffusion's own is the configuration: the defaults and which attention processors each stage runs with
(as the official code); its supervision grid is the toolkit's `supervision_grid` (DragNoise and GoodDrag use it).

Reproduces the official DragBench path (`run_drag` of Yujun-Shi/DragDiffusion); the official-ref README
describes each behaviour and `tests/test_official_ref.py` checks the numbers. Numeric precision per stage is
the `precision` knob (`precision.py`; README.md "Precision": where each mode differs from the official code).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dragbench.backbone import Backbone
from dragbench.diffusion.attention import MutualSelfAttention, attention_for, controlled_layers
from dragbench.diffusion.conditioning import Conditioning
from dragbench.diffusion.ddim import (
    check_inversion_step,
    ddim_denoise,
    decode_latents,
    to_uint8,
)
from dragbench.diffusion.drag_loop import DragLoopResult, MotionLoss, PointTracker, drag_latent
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
class DragDiffusionTrace:
    """Every intermediate of one edit (for tests, notebooks and the official-ref comparison).

    Attributes:
        token_ids: (77,) prompt token ids.
        inverted: (1, 4, h, w) z_t after DDIM inversion.
        drag: the drag loop's outcome (optimised latent, handles, losses, counts).
        handles_init_rc, targets_rc: (N, 2) float32 points on the supervision grid (row, col).
        grid_hw: (h, w) of the supervision grid.
        timestep: DDPM timestep of the drag (681 for 35 of 50).
        edited_float, reference_float: (1, 3, h8, w8) decoded images in [0, 1] before resizing.
        image: (H, W, 3) uint8 output, the edited branch resized to the input size and truncated.
        times: seconds per stage.
    """

    token_ids: torch.Tensor
    inverted: torch.Tensor
    drag: DragLoopResult
    handles_init_rc: torch.Tensor
    targets_rc: torch.Tensor
    grid_hw: tuple[int, int]
    timestep: int
    edited_float: torch.Tensor
    reference_float: torch.Tensor
    image: np.ndarray
    times: dict[str, float] = field(default_factory=dict)


class DragDiffusion(TimestepDrag):
    """DragDiffusion with the official DragBench defaults (protocol §2); keys = conf/method/dragdiffusion.yaml.

    Args:
        backbone: SD-1.5-shaped models (real or tiny); shared and left unmodified.
        inversion_step: DDIM steps inverted (35 of 50 -> t = 681).
        n_inference_steps: DDIM schedule length (50).
        guidance_scale: 1.0 (no classifier-free guidance, the official DragBench setting; others unsupported).
        unet_block: 1-based decoder block whose output are the features (block b = `unet.up_blocks[b-1]`).
        latent_lr: Adam learning rate on z_t.
        max_iters: drag-loop iterations at most.
        r1: motion-supervision patch radius (supervision-grid px), for the default `motion_loss`.
        r2: point-tracking search radius (grid px), for the default `point_tracker`.
        lam: mask-term weight.
        stop_distance: all handles closer than this (grid px) -> stop; closer pairs are not supervised.
        start_layer: first self-attention layer under mutual self-attention, 0-based in execution order
            over this backbone's UNet (`self_attention_layers`: SD-1.5 has 16, so 10 = the last six).
        start_step: first denoising step (from 0) under mutual self-attention.
        lora_steps: LoRA fine-tuning steps (0 = no LoRA).
        lora_rank: LoRA rank (alpha = rank).
        lora_lr: LoRA AdamW learning rate.
        lora_batch_size: LoRA batch size.
        lora_plan_steps: the other LoRA step counts of the sweep this job belongs to (cost only, results are
            bit-identical): with a cache, the first job of a sample trains once to the largest count and
            stores every snapshot, so the other points train nothing. Ignored without a cache.
        seed: torch seed set before every sample.
        cache: optional content-addressed cache for LoRA snapshots and inverted latents.
        precision: numeric precision per stage (`precision.PRECISION_CHOICES`): "official_fp16" = the
            official DragBench scripts' casting (LoRA under fp16 mixed precision on fp16 weights, drag loop
            under fp16 autocast + GradScaler, inversion and denoising in fp32); "fp32" = float32 throughout;
            "auto" = official_fp16 on CUDA, fp32 elsewhere. Resolved once here (`precision_plan`) and
            recorded in every EditResult.info. The backbone must hold float32 weights (model.dtype=float32):
            the fp16 weights of a stage are a temporary copy.
        point_tracker: the drag loop's point tracker (`dragbench.diffusion.drag_loop.PointTracker`);
            None = DragDiffusion's `NearestNeighbourTracker(radius=r2)`.
        motion_loss: the drag loop's motion-supervision loss (`MotionLoss`); None = DragDiffusion's
            `PatchMotionSupervision(radius=r1, skip_distance=stop_distance)`.
    """

    def __init__(
        self,
        backbone: Backbone,
        inversion_step: int = 35,
        n_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        unet_block: int = 3,
        latent_lr: float = 0.01,
        max_iters: int = 80,
        r1: int = 1,
        r2: int = 3,
        lam: float = 0.1,
        stop_distance: float = 2.0,
        start_layer: int = 10,
        start_step: int = 0,
        lora_steps: int = 80,
        lora_rank: int = 16,
        lora_lr: float = 5e-4,
        lora_batch_size: int = 4,
        lora_plan_steps: list[int] | None = None,
        seed: int = 42,
        cache: Any | None = None,
        precision: str = "auto",
        point_tracker: PointTracker | None = None,
        motion_loss: MotionLoss | None = None,
    ) -> None:
        self.block_index = check_unet_block(backbone.unet, unet_block)  # up_blocks index of the knob
        check_inversion_step(inversion_step, n_inference_steps)
        if guidance_scale != 1.0:
            raise ValueError(
                f"guidance_scale={guidance_scale}: only 1.0 (the official DragBench path, no CFG) "
                "is implemented; set method.guidance_scale=1.0"
            )
        self.precision_plan: PrecisionPlan = resolve_precision(precision, backbone.device)
        require_float32_weights(backbone, "DragDiffusion")
        controlled_layers(backbone.unet, start_layer)  # validates start_layer for this UNet
        self.backbone = backbone
        self.inversion_step = inversion_step
        self.n_inference_steps = n_inference_steps
        self.guidance_scale = guidance_scale
        self.unet_block = unet_block
        self.latent_lr = latent_lr
        self.max_iters = max_iters
        self.r1 = r1
        self.r2 = r2
        self.lam = lam
        self.stop_distance = stop_distance
        self.start_layer = start_layer
        self.start_step = start_step
        self.seed = seed
        self.lora = PerImageLora(
            lora_steps, lora_rank, lora_lr, lora_batch_size, seed, plan_steps=tuple(lora_plan_steps or ())
        )
        self.cache = cache
        if cache is not None:
            _ = backbone.fingerprint  # read once now, before any LoRA adapter is applied to the shared UNet
        self.precision = precision
        self.point_tracker = NearestNeighbourTracker(radius=r2) if point_tracker is None else point_tracker
        if motion_loss is None:
            motion_loss = PatchMotionSupervision(radius=r1, skip_distance=stop_distance)
        self.motion_loss = motion_loss

    # ------------------------------------------------------------------ public API
    def edit_info(self, sample: DragSample, trace: DragDiffusionTrace) -> dict[str, Any]:
        """DragDiffusion's own info keys (`edit`, in TimestepDrag, adds the shared ones)."""
        return {
            "internal_hw": [sample.height, sample.width],  # run at the input size, as official (no resize)
            "latent_hw": list(trace.inverted.shape[-2:]),
        }

    def run(self, sample: DragSample) -> DragDiffusionTrace:
        """The whole edit, returning every intermediate (`edit` packages this)."""
        # 0. validate and seed (protocol §2: seed 42 before every sample)
        validate_sample(sample)
        torch.manual_seed(self.seed)
        times = StageTimes()
        grid_hw, handles_rc, targets_rc = self.grid_points(sample)
        # 1. per-image LoRA: train or fetch snapshots (dragbench.diffusion.lora)
        with times.stage("lora"):
            lora_state = self.lora.train(
                self.backbone, sample.image, sample.prompt, self.cache, self.precision_plan.lora
            )
        # ... applied to the shared UNet for steps 2-4, removed on exit
        with self.lora.applied(self.backbone.unet, lora_state):
            # 2. DDIM inversion to t (dragbench.diffusion.ddim, cached)
            with times.stage("inversion"):
                inverted = self.invert(sample, lora_state)
            # 3. drag loop on z_t (dragbench.diffusion.drag_loop with this method's tracker and loss)
            with times.stage("drag"):
                drag = self.drag(sample, inverted, lora_active=lora_state is not None)
            # 4. denoise [reference, edited] under mutual self-attention (dragbench.diffusion.attention)
            with times.stage("denoise"):
                reference_float, edited_float = self.denoise(sample.prompt, inverted, drag.latent)
        # 5. back to the input size, uint8 by truncation (as official)
        image = to_uint8(edited_float, (sample.height, sample.width))
        log.info(
            "%s: %d drag iterations, reached=%s, %.1fs",
            sample.sample_id,
            drag.iterations,
            drag.reached,
            sum(times.seconds.values()),
        )
        return DragDiffusionTrace(
            token_ids=self._token_ids(sample.prompt),
            inverted=inverted,
            drag=drag,
            handles_init_rc=handles_rc,
            targets_rc=targets_rc,
            grid_hw=grid_hw,
            timestep=self.timestep,
            edited_float=edited_float,
            reference_float=reference_float,
            image=image,
            times=dict(times.seconds),
        )

    def drag(self, sample: DragSample, inverted: torch.Tensor, lora_active: bool = False) -> DragLoopResult:
        """Optimise z_t so the handles' features move to the targets (the drag loop at `self.timestep`).

        Args:
            sample: the sample (prompt, mask, points).
            inverted: (1, 4, h, w) z_t from `invert`.
            lora_active: a LoRA is applied to the UNet (then the current processors are kept, as official).
        """
        bb = self.backbone
        grid_hw, handles_rc, targets_rc = self.grid_points(sample)
        mask = torch.tensor(np.asarray(sample.mask), device=bb.device)
        mask_latent = mask_to_latent(mask, grid_hw, tuple(inverted.shape[-2:]))  # (1, 1, h, w)
        cond = bb.condition(sample.prompt)  # batch 1
        with attention_for(bb.unet, lora_active):
            return self._drag(inverted, cond, self.timestep, handles_rc, targets_rc, mask_latent, grid_hw)

    @torch.no_grad()
    def denoise(
        self, prompt: str, inverted: torch.Tensor, dragged: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Denoise the batch [reference z_t, dragged z_t] under mutual self-attention and decode both.

        Returns:
            (reference, edited), each (1, 3, 8h, 8w) in [0, 1].
        """
        bb = self.backbone
        latents = torch.cat([inverted, dragged.to(inverted.dtype)], dim=0)  # (2, 4, h, w): [ref, edited]
        cond = bb.condition([prompt, prompt])  # batch 2, one encoder call as the official pipeline call
        with MutualSelfAttention(
            bb.unet, start_layer=self.start_layer, start_step=self.start_step
        ) as control, self.precision_plan.denoise.autocast_context(bb.device.type):
            latents = ddim_denoise(
                bb,
                latents,
                cond,
                bb.scheduler.config,
                self.n_inference_steps,
                self.inversion_step,
                step_callback=control.on_step,
            )
        images = decode_latents(bb, latents)  # (2, 3, 8h, 8w)
        return images[0:1], images[1:2]

    # ------------------------------------------------------------------ steps
    def _token_ids(self, prompt: str) -> torch.Tensor:
        tok = self.backbone.tokenizer
        return tok(
            prompt,
            padding="max_length",
            max_length=tok.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids[0]

    def _drag(
        self,
        inverted: torch.Tensor,
        cond: Conditioning,
        timestep: int,
        handles_rc: torch.Tensor,
        targets_rc: torch.Tensor,
        mask_latent: torch.Tensor,
        grid_hw: tuple[int, int],
    ) -> DragLoopResult:
        bb = self.backbone
        block = self.block_index
        scheduler = bb.fresh_scheduler()
        scheduler.set_timesteps(self.n_inference_steps)
        with UNetFeatureHooks(bb.unet, [block]) as hooks:

            def forward(latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                eps = bb.predict_noise(latent, timestep, cond)
                feats = F.interpolate(hooks.features[block], grid_hw, mode="bilinear")  # (1, C, gh, gw)
                x_prev = scheduler.step(eps, timestep, latent).prev_sample  # (1, 4, h, w)
                return feats, x_prev

            return drag_latent(
                inverted,
                forward,
                handles_rc,
                targets_rc,
                mask_latent,
                lr=self.latent_lr,
                max_iters=self.max_iters,
                lam=self.lam,
                stop_distance=self.stop_distance,
                tracker=self.point_tracker,
                motion_loss=self.motion_loss,
                precision=self.precision_plan.drag,
            )
