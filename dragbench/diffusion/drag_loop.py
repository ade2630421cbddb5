"""The latent-optimisation drag loop (DragDiffusion's, protocol §2; official-ref README "Drag loop (at t = 681)").

Each iteration: features of the current latent -> point tracking (not in the first) -> stop check ->
motion supervision + mask term -> one Adam step. The feature function, the point tracker and the
motion-supervision loss are parameters (DragDiffusion's `NearestNeighbourTracker` and
`PatchMotionSupervision` are the defaults), so a method that changes one of them reuses the rest; the loop
is testable with any differentiable map from latent to (features, one-step-denoised latent).

The optimised variable is whatever `forward` maps: z_t for DragDiffusion (the default use), the UNet
bottleneck for DragNoise (`dragbench.diffusion.bottleneck`; its `forward` runs the UNet on the fixed z_t with
the mid-block output replaced by the variable). The names below say "latent" for the default case.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from dragbench.diffusion.mask_term import mask_term
from dragbench.diffusion.motion_supervision import PatchMotionSupervision
from dragbench.diffusion.point_tracking import NearestNeighbourTracker, all_reached
from dragbench.diffusion.precision import FP32, StagePrecision
from dragbench.progress import track

log = logging.getLogger(__name__)

# latent (1, 4, h, w) -> (features on the supervision grid (1, C, gh, gw), DDIM step below t (1, 4, h, w))
ForwardFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# (features F1 (1, C, gh, gw), features F0 of latent0, current handles (N, 2), initial handles (N, 2))
#   -> new handles (N, 2) (row, col), same dtype; called without gradients from the second iteration on
PointTracker = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# (features F1 with gradients, current handles (N, 2), targets (N, 2)) -> scalar loss (or 0.0: nothing to do)
MotionLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], "torch.Tensor | float"]


@dataclass
class DragLoopResult:
    """Outcome of `drag_latent`.

    Attributes:
        latent: (1, 4, h, w) optimised latent (detached).
        handles_rc: (N, 2) handles after the last tracking step (row, col on the grid).
        trajectory: handles at each stop check; entry 0 = initial handles.
        losses: total loss of each optimiser step.
        iterations: loop iterations entered (each runs the feature function once).
        steps: optimiser steps taken (= iterations - 1 when the targets were reached).
        reached: True when the loop ended because every handle reached its target.
    """

    latent: torch.Tensor
    handles_rc: torch.Tensor
    trajectory: list[torch.Tensor] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    iterations: int = 0
    steps: int = 0
    reached: bool = False


def drag_latent(
    latent0: torch.Tensor,
    forward: ForwardFn,
    handles_rc: torch.Tensor,
    targets_rc: torch.Tensor,
    mask_latent: torch.Tensor | None,
    *,
    lr: float,
    max_iters: int,
    lam: float,
    stop_distance: float,
    tracker: PointTracker | None = None,
    motion_loss: MotionLoss | None = None,
    precision: StagePrecision = FP32,
    mask_term_always: bool = False,
) -> DragLoopResult:
    """Optimise `latent0` so that the features at the handles move to the targets.

    Args:
        latent0: the optimised variable's start (not modified): (1, 4, h, w) inverted latent z_t by default,
            any tensor `forward` maps (DragNoise: the (1, C, h', w') bottleneck).
        forward: variable -> (features (1, C, gh, gw), DDIM prev sample (1, 4, h, w)).
        handles_rc: (N, 2) float32 integer-valued handles (row, col) on the feature grid.
        targets_rc: (N, 2) float32 targets (row, col).
        mask_latent: (1, 1, h, w) editable mask on the latent grid (1 = editable), or None.
        lr: Adam learning rate (protocol §2: 0.01).
        max_iters: at most this many iterations (protocol §2: 80).
        lam: mask-term weight.
        stop_distance: stop when all handles are closer than this (grid px).
        tracker: point tracker; None = DragDiffusion's `NearestNeighbourTracker(radius=3)` (r2 = 3).
        motion_loss: motion-supervision loss; None = DragDiffusion's
            `PatchMotionSupervision(radius=1, skip_distance=stop_distance)` (r1 = 1).
        precision: autocast around each iteration's forward pass and loss, on the latent's device type
            (official_fp16: fp16 autocast + GradScaler, as the official `drag_diffusion_update`). The first
            forward (F0, x_prev0) runs without autocast, as there. `precision.weights` is the caller's.
        mask_term_always: add the mask term even when the mask is empty (then every change is penalised), as
            DragNoise's official loop does; False = DragDiffusion's (no mask term for an empty mask).

    Returns:
        DragLoopResult; its latent is float32.
    """
    tracker = NearestNeighbourTracker(radius=3) if tracker is None else tracker
    if motion_loss is None:
        motion_loss = PatchMotionSupervision(radius=1, skip_distance=stop_distance)
    device_type = latent0.device.type
    with torch.no_grad():
        feats0, x_prev0 = forward(latent0)
    # optimised in float32 whatever latent0's dtype: Adam and GradScaler need fp32 leaves (an fp16 latent
    # made every fp16-weights edit fail with "Attempting to unscale FP16 gradients")
    latent = latent0.detach().to(torch.float32, copy=True).requires_grad_(True)
    optimizer = torch.optim.Adam([latent], lr=lr)
    scaler = precision.grad_scaler(device_type)
    use_mask = mask_latent is not None and (mask_term_always or bool(mask_latent.sum() != 0.0))
    handles_init = handles_rc.detach().clone()
    handles = handles_init.clone()
    result = DragLoopResult(latent=latent0, handles_rc=handles)
    losses: list[torch.Tensor] = []  # kept on the device; one host copy after the loop
    for it in track(range(max_iters), "drag iteration"):  # a bar / log lines (dragbench.progress)
        result.iterations = it + 1
        with precision.autocast_context(device_type):
            feats, x_prev = forward(latent)
            if it != 0:
                with torch.no_grad():
                    handles = tracker(feats, feats0, handles, handles_init)
            result.trajectory.append(handles.clone())
            if all_reached(handles, targets_rc, stop_distance):
                result.reached = True
                break
            loss = motion_loss(feats, handles, targets_rc)
            if use_mask:
                loss = loss + mask_term(x_prev, x_prev0, mask_latent, lam)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        losses.append(loss.detach().float())
        result.steps += 1
        if log.isEnabledFor(logging.DEBUG):  # the arguments would force a host sync every iteration
            log.debug("drag iteration %d loss %.6f handles %s", it, float(loss), handles.tolist())
    result.losses = torch.stack(losses).tolist() if losses else []
    result.latent = latent.detach()
    result.handles_rc = handles
    return result
