"""GoodDrag on a real image (protocol §7): LoRA -> DDIM inversion -> alternating drag and denoise -> decode.

A composition of `dragbench.diffusion` pieces (`GoodDrag.run` numbers the steps). What is GoodDrag's own lives
beside this file: the AlDD schedule (`aldd.py`) and the information-preserving motion supervision
(`information_preserving.py`); the mask term is the toolkit's, measured against the original trajectory's
x_{t-1}. Reproduces the official DragBench path (`bench_gooddrag.py` -> `run_gooddrag` -> `GoodDragger.good_drag`
of zewei-Zhang/GoodDrag fc01bc1); `tests/data/official_gooddrag_ref/README.md` lists the facts and
`tests/test_gooddrag_official_ref.py` checks the numbers.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dragbench.backbone import Backbone
from dragbench.diffusion.attention import MutualSelfAttention, attention_for, controlled_layers
from dragbench.diffusion.components import AUTO, component_requirements, with_component
from dragbench.diffusion.ddim import cached_inversion, decode_latents, denoising_timesteps, to_uint8
from dragbench.diffusion.features import UNetFeatureHooks, check_unet_block
from dragbench.diffusion.lora import PerImageLora
from dragbench.diffusion.mask_term import mask_to_latent
from dragbench.diffusion.precision import require_float32_weights
from dragbench.diffusion.supervision_grid import grid_points, grid_rc_to_xy, points_record
from dragbench.progress import track
from dragbench.sample import DragSample
from dragbench.validation import validate_sample
from dragbench.weights import WeightFile
from methods.base import EditResult, StageTimes, required_info, reset_peak_memory
from methods.gooddrag.aldd import AlddParams, DragState, TimestepDrag, drag_at_timestep

log = logging.getLogger(__name__)

PAPER_VAE = "stabilityai/sd-vae-ft-mse"  # GoodDrag's bench and paper setup (`vae_path` in bench_gooddrag.py)


@dataclass
class GoodDragTrace:
    """Every intermediate of one edit (for tests and the official-reference comparison).

    Attributes:
        inverted: (1, 4, h, w) x_t after DDIM inversion (t = 741 for strength 0.75 of 50).
        reference_prev: x_{t-1} of the original trajectory at each drag timestep, (1, 4, h, w) each.
        drags: one record per drag timestep (losses, tracking rounds, stop reason).
        handles_init_rc, targets_rc, handles_rc: (N, 2) points on the supervision grid (row, col).
        grid_hw: (h, w) of the supervision grid.
        timesteps: the denoising timesteps from x_t (38 for strength 0.75).
        mutual_from: index into `timesteps` from which mutual self-attention ran.
        edited_float: (1, 3, 8h, 8w) decoded edit in [0, 1] before resizing.
        image: (H, W, 3) uint8 output, resized to the input size and truncated.
        times: seconds per stage.
    """

    inverted: torch.Tensor
    reference_prev: list[torch.Tensor]
    drags: list[TimestepDrag]
    handles_init_rc: torch.Tensor
    targets_rc: torch.Tensor
    handles_rc: torch.Tensor
    grid_hw: tuple[int, int]
    timesteps: list[int]
    mutual_from: int
    edited_float: torch.Tensor
    image: np.ndarray
    times: dict[str, float] = field(default_factory=dict)

    @property
    def optimizer_steps(self) -> int:
        return sum(len(d.losses) for d in self.drags)


class GoodDrag:
    """GoodDrag with the official bench defaults (protocol §7); keys = conf/method/gooddrag.yaml.

    Args:
        backbone: SD-1.5-shaped models (real or tiny); shared and left unmodified.
        vae: "auto" = sd-vae-ft-mse for a hub SD-1.5 backbone, the backbone's own for a local folder or the
            tiny model (`dragbench.diffusion.components`); "own"/None; or a hub id / folder.
        prompt: the prompt for LoRA, inversion and denoising; "" = the bench's empty prompt; None = the sample's.
        inversion_strength: fraction of the `n_inference_steps` DDIM steps inverted (0.75 -> 38 of 50, t = 741).
        n_inference_steps: DDIM schedule length (50).
        drag_end_step: drag at the first this many denoising timesteps at most (7).
        track_per_step, drag_per_track, max_no_change, latent_lr, lam, r1, r2, beta, drag_loss_threshold,
            stop_distance: the AlDD knobs (`aldd.AlddParams`).
        unet_block: 1-based decoder block whose output are the features (3 = `up_blocks[2]`, the official
            `feature_idx` 3).
        start_layer: first self-attention layer (execution order) under mutual self-attention once the drag
            phase is over (10 of SD-1.5's 16).
        lora_steps, lora_rank, lora_lr, lora_batch_size, lora_plan_steps: per-image LoRA (70, 16, 5e-4, 4);
            `lora_plan_steps` = other step counts of a sweep, trained once and cached (cost only).
        seed: torch seed set before every sample.
        cache: content-addressed cache for LoRA snapshots and inverted latents.
    """

    def __init__(
        self,
        backbone: Backbone,
        vae: str | None = AUTO,
        prompt: str | None = "",
        inversion_strength: float = 0.75,
        n_inference_steps: int = 50,
        drag_end_step: int = 7,
        track_per_step: int = 10,
        drag_per_track: int = 3,
        max_no_change: int = 5,
        latent_lr: float = 0.02,
        lam: float = 0.1,
        r1: int = 4,
        r2: int = 12,
        beta: float = 4.0,
        drag_loss_threshold: float = 0.0,
        stop_distance: float = 2.0,
        unet_block: int = 3,
        start_layer: int = 10,
        lora_steps: int = 70,
        lora_rank: int = 16,
        lora_lr: float = 5e-4,
        lora_batch_size: int = 4,
        lora_plan_steps: list[int] | None = None,
        seed: int = 42,
        cache: Any | None = None,
    ) -> None:
        self.inversion_step = round(inversion_strength * n_inference_steps)  # Python round, as official
        if not 1 <= self.inversion_step <= n_inference_steps:
            raise ValueError(
                f"inversion_strength={inversion_strength} inverts {self.inversion_step} of {n_inference_steps} "
                "steps: set method.inversion_strength in (0, 1]"
            )
        if not 0 <= drag_end_step < self.inversion_step:
            raise ValueError(
                f"drag_end_step={drag_end_step}: must be in 0..{self.inversion_step - 1} (the drag timesteps "
                "come from the inverted ones); lower method.drag_end_step or raise method.inversion_strength"
            )
        self.block_index = check_unet_block(backbone.unet, unet_block)  # up_blocks index of the knob
        controlled_layers(backbone.unet, start_layer)  # validates start_layer for this UNet
        require_float32_weights(backbone, "GoodDrag", precision_knob=False)
        self.backbone, self.vae_label = with_component(backbone, "vae", vae, PAPER_VAE)
        if self.vae_label != "own" or vae == AUTO:
            log.info("GoodDrag VAE: %s (vae=%s)", self.vae_label, vae)
        self.prompt = prompt
        self.n_inference_steps = n_inference_steps
        self.drag_end_step = drag_end_step
        self.params = AlddParams(
            lr=latent_lr,
            lam=lam,
            r1=r1,
            r2=r2,
            beta=beta,
            track_per_step=track_per_step,
            drag_per_track=drag_per_track,
            max_no_change=max_no_change,
            drag_loss_threshold=drag_loss_threshold,
            stop_distance=stop_distance,
        )
        self.unet_block = unet_block
        self.start_layer = start_layer
        self.seed = seed
        self.lora = PerImageLora(
            lora_steps, lora_rank, lora_lr, lora_batch_size, seed, plan_steps=tuple(lora_plan_steps or ())
        )
        self.cache = cache
        if cache is not None:
            _ = self.backbone.fingerprint  # read once now, before any LoRA adapter is applied to the shared UNet

    @staticmethod
    def weight_requirements(backbone: dict, vae: str | None = AUTO) -> list[WeightFile]:
        """The VAE files `vae` needs beyond the backbone's own (none for "auto" on a local/tiny backbone)."""
        pretrained = str(backbone.get("pretrained", "tiny")) if isinstance(backbone, dict) else "tiny"
        local = bool(backbone.get("local_files_only", False)) if isinstance(backbone, dict) else False
        return component_requirements(
            vae, PAPER_VAE, pretrained, "vae", "GoodDrag VAE (sd-vae-ft-mse)", "vae", local
        )

    # ------------------------------------------------------------------ public API
    def edit(self, sample: DragSample) -> EditResult:
        """Drag-edit one sample; returns the edited image (input H x W), final handles (x, y) and info."""
        reset_peak_memory(self.backbone.device)
        trace = self.run(sample)
        handles_xy = grid_rc_to_xy(trace.handles_rc, (sample.height, sample.width), trace.grid_hw)
        stops = [d.stopped for d in trace.drags if d.stopped]
        info = {
            **required_info(trace.times, trace.optimizer_steps, self.backbone.device),
            "drag_timesteps": len(trace.drags),
            "tracking_rounds": sum(len(d.tracks) for d in trace.drags),
            "stop_reason": stops[-1] if stops else "drag_end_step",
            "losses": [loss for d in trace.drags for loss in d.losses],
            "weights": self.backbone.weights,
            "vae": self.vae_label,
            "precision": "fp32",
            "drag_timestep": trace.timesteps[0],
            **points_record(trace.grid_hw, trace.handles_init_rc, trace.handles_rc, trace.targets_rc),
        }
        return EditResult(image=trace.image, handles=handles_xy, info=info)

    def run(self, sample: DragSample) -> GoodDragTrace:
        """The whole edit, returning every intermediate (`edit` packages this)."""
        # 0. validate and seed (the official GoodDragger seeds 42 per image)
        validate_sample(sample)
        torch.manual_seed(self.seed)
        times = StageTimes()
        prompt = sample.prompt if self.prompt is None else self.prompt
        # 1. per-image LoRA (toolkit trainer: the same recipe as the official train_lora), train or fetch
        with times.stage("lora"):
            lora_state = self.lora.train(self.backbone, sample.image, prompt, self.cache)
        with self.lora.applied(self.backbone.unet, lora_state):
            # 2. DDIM inversion to t (cached; classic attention without LoRA, as the official no-LoRA path)
            with times.stage("inversion"):
                inverted = self.invert(sample.image, prompt, lora_state)
            # 3.-4. alternating drag and denoise, then decode
            with times.stage("drag_denoise"):
                trace = self.drag_and_denoise(sample, prompt, inverted, lora_active=lora_state is not None)
        trace.times = dict(times.seconds)
        log.info(
            "%s: %d drag steps over %d timesteps, handles %s",
            sample.sample_id,
            trace.optimizer_steps,
            len(trace.drags),
            trace.handles_rc.tolist(),
        )
        return trace

    def invert(
        self, image: np.ndarray, prompt: str, lora_state: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """VAE posterior mean x scale, then `inversion_step` DDIM inversion steps: x_t (1, 4, h, w)."""
        return cached_inversion(
            self.backbone, image, prompt, self.n_inference_steps, self.inversion_step, lora_state, self.cache
        )

    @torch.no_grad()
    def drag_and_denoise(
        self, sample: DragSample, prompt: str, inverted: torch.Tensor, lora_active: bool = False
    ) -> GoodDragTrace:
        """AlDD: drag at each of the first `drag_end_step` timesteps, denoise [reference, dragged] one step after
        each, switch to mutual self-attention once the drag phase is over, decode the edited branch."""
        bb = self.backbone
        image_hw = (sample.height, sample.width)
        grid_hw, handles, targets = grid_points(image_hw, sample.handles, sample.targets, bb.device)
        mask = torch.tensor(np.asarray(sample.mask), device=bb.device)
        mask_latent = mask_to_latent(mask, grid_hw, tuple(inverted.shape[-2:]))  # (1, 1, h, w), 1 = editable
        cond = bb.condition(prompt)  # batch 1
        cond2 = bb.condition([prompt, prompt])  # batch 2, [reference, dragged]
        timesteps = [int(t) for t in denoising_timesteps(bb.scheduler.config, self.n_inference_steps)]
        timesteps = timesteps[self.n_inference_steps - self.inversion_step :]
        scheduler = bb.fresh_scheduler()
        scheduler.set_timesteps(self.n_inference_steps)
        block = self.block_index
        state = DragState(handles_rc=handles.clone(), handles_init_rc=handles.clone())
        drags: list[TimestepDrag] = []
        reference_prev: list[torch.Tensor] = []
        ref_single = inverted  # the original trajectory in batch 1 (the official get_original_features)
        ref, z = inverted, inverted
        mutual_from = len(timesteps)
        with contextlib.ExitStack() as stack:
            hooks = stack.enter_context(UNetFeatureHooks(bb.unet, [block]))
            attention = stack.enter_context(contextlib.ExitStack())
            # official: classic attention without LoRA until the drag phase ends, the loaded processors with it
            attention.enter_context(attention_for(bb.unet, lora_active))

            def forward(latent: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
                eps = bb.predict_noise(latent, t, cond)
                feats = F.interpolate(hooks.features[block], grid_hw, mode="bilinear")  # (1, C, gh, gw)
                return feats, scheduler.step(eps, t, latent).prev_sample

            for i, t in track(list(enumerate(timesteps)), "AlDD denoising step", unit="step"):
                # as the official loop: a counter that reached max_no_change in the last round of the previous
                # timestep ends the drag phase here, without re-tracking
                if i < self.drag_end_step and state.active and state.no_change < self.params.max_no_change:
                    # the original trajectory at t: F0(t) and x_{t-1} (computed lazily: one map in memory)
                    feats_ref, ref_single = forward(ref_single, t)
                    reference_prev.append(ref_single)
                    with torch.enable_grad():
                        z, record = drag_at_timestep(
                            z, t, forward, feats_ref, ref_single, targets, mask_latent, state, self.params
                        )
                    drags.append(record)
                elif mutual_from == len(timesteps):
                    # drag phase over: mutual self-attention from here on (official `set_latent_masactrl`)
                    mutual_from = i
                    attention.close()
                    attention.enter_context(MutualSelfAttention(bb.unet, start_layer=self.start_layer))
                latents = torch.cat([ref, z], dim=0)  # (2, 4, h, w)
                eps = bb.predict_noise(latents, t, cond2)
                latents = scheduler.step(eps, t, latents).prev_sample
                ref, z = latents[0:1], latents[1:2]
        edited = decode_latents(bb, z)  # (1, 3, 8h, 8w) in [0, 1]
        image = to_uint8(edited, image_hw)  # bilinear resize, x255 truncated, as official
        return GoodDragTrace(
            inverted=inverted,
            reference_prev=reference_prev,
            drags=drags,
            handles_init_rc=handles,
            targets_rc=targets,
            handles_rc=state.handles_rc,
            grid_hw=grid_hw,
            timesteps=timesteps,
            mutual_from=mutual_from,
            edited_float=edited,
            image=image,
        )
