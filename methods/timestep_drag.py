"""What DragDiffusion and DragNoise share around their drag: both DDIM-invert the input to one timestep t,
drag there on DragDiffusion's half-size supervision grid with the toolkit drag loop, and report the same
record (protocol §2, §8). Each method keeps its own knobs, `run` and drag; this class holds the rest once.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from dragbench.backbone import Backbone
from dragbench.diffusion.ddim import cached_inversion, drag_timestep
from dragbench.diffusion.drag_loop import DragLoopResult
from dragbench.diffusion.precision import PrecisionPlan
from dragbench.diffusion.supervision_grid import grid_points, grid_rc_to_xy, points_record
from dragbench.sample import DragSample
from methods.base import EditResult, required_info, reset_peak_memory


class TimestepDragTrace(Protocol):
    """The parts of a method's trace (its `run` result) that `TimestepDrag.edit` reports."""

    drag: DragLoopResult
    handles_init_rc: torch.Tensor
    targets_rc: torch.Tensor
    grid_hw: tuple[int, int]
    timestep: int
    image: Any
    times: dict[str, float]


class TimestepDrag:
    """Base of a method that drags at one inverted DDIM timestep (DragDiffusion, DragNoise).

    A subclass sets `backbone`, `n_inference_steps`, `inversion_step`, `cache` and `precision_plan` in its
    constructor and implements `run(sample)` returning a `TimestepDragTrace`; `edit_info` adds its own keys.
    """

    backbone: Backbone
    n_inference_steps: int
    inversion_step: int
    cache: Any | None
    precision_plan: PrecisionPlan

    def run(self, sample: DragSample) -> TimestepDragTrace:
        raise NotImplementedError

    def edit_info(self, sample: DragSample, trace: Any) -> dict[str, Any]:
        """The method's own EditResult.info keys beyond the shared ones (none by default)."""
        return {}

    def edit(self, sample: DragSample) -> EditResult:
        """Drag-edit one sample; returns the edited image (input H x W), final handles (x, y) and info."""
        reset_peak_memory(self.backbone.device)
        trace = self.run(sample)
        handles_xy = grid_rc_to_xy(trace.drag.handles_rc, (sample.height, sample.width), trace.grid_hw)
        info = {
            **required_info(trace.times, trace.drag.iterations, self.backbone.device),
            "optimizer_steps": trace.drag.steps,
            "reached_targets": trace.drag.reached,
            "losses": list(trace.drag.losses),
            "weights": self.backbone.weights,
            "drag_timestep": trace.timestep,
            **self.edit_info(sample, trace),
            **points_record(trace.grid_hw, trace.handles_init_rc, trace.drag.handles_rc, trace.targets_rc),
            **self.precision_plan.info(),
        }
        return EditResult(image=trace.image, handles=handles_xy, info=info)

    @property
    def timestep(self) -> int:
        """DDPM timestep of the drag (681 for inversion_step 35 of 50)."""
        return drag_timestep(self.backbone.scheduler.config, self.n_inference_steps, self.inversion_step)

    def grid_points(self, sample: DragSample) -> tuple[tuple[int, int], torch.Tensor, torch.Tensor]:
        """Supervision grid (h, w) and the sample's handles / targets on it, (N, 2) float32 (row, col)."""
        return grid_points((sample.height, sample.width), sample.handles, sample.targets, self.backbone.device)

    def invert(self, sample: DragSample, lora_state: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """VAE posterior mean x scale, then DDIM inversion to `self.timestep`: z_t (1, 4, h, w).

        Uses the cache when one was given. `lora_state` only enters the cache key (the caller applies it), with
        the attention processors, so DragDiffusion and DragNoise share an inversion whenever their inputs are
        equal.
        """
        return cached_inversion(
            self.backbone,
            sample.image,
            sample.prompt,
            self.n_inference_steps,
            self.inversion_step,
            lora_state,
            self.cache,
            self.precision_plan.inversion,
        )
