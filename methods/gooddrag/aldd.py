"""Alternating Drag and Denoising (AlDD, GoodDrag §3.2; protocol §7): the drag spread over denoising steps.

Instead of optimising one latent z_t for many steps and then denoising (DragDiffusion), GoodDrag alternates:
at each of the first `drag_end_step` denoising timesteps it runs a few tracking rounds of latent
optimisation on the current x_t, then one DDIM step takes the dragged latent (and, in the same batch, the
undragged reference) to the next timestep. Facts of the official `GoodDragger.gooddrag_step` / `good_drag`
(zewei-Zhang/GoodDrag fc01bc1, `pipeline.py`) that this reproduces:

- a fresh Adam per timestep; each iteration runs the UNet on the current latent, giving features F1 and the
  DDIM step below t;
- in the first iteration of a timestep the handles are tracked first (the latent was just denoised);
- then the stop checks, in this order, without an optimiser step: every handle < 2 cells from its target
  (the drag phase ends), or `max_no_change` tracking rounds in a row left every handle where it was (the
  counter carries over between timesteps);
- loss = information-preserving motion supervision against the original trajectory's F0(t) plus
  lam * sum |(x_{t-1} - x_{t-1} of the original trajectory) * (1 - mask)|; one Adam step;
- after every `drag_per_track` steps a tracking round with the features F1 computed *before* that step;
- at most `track_per_step` tracking rounds per timestep.
Tracking always compares F0(t) at the initial handle with the current F1(t) (the official code forces its
`compare_mode` on, whatever the argument), L1 over channels in a (2 r2 + 1)^2 window (toolkit
`track_points`, clipped at the grid borders; the official window is not clipped, which fails at the border).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from dragbench.diffusion.mask_term import mask_term
from dragbench.diffusion.point_tracking import all_reached, track_points
from methods.gooddrag.information_preserving import information_preserving_loss

log = logging.getLogger(__name__)

# (latent (1, 4, h, w), timestep) -> (features on the supervision grid (1, C, gh, gw), DDIM step below t)
TimestepForward = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class AlddParams:
    """The drag knobs of one GoodDrag edit (conf/method/gooddrag.yaml gives the bench values).

    Attributes:
        lr: Adam learning rate on x_t (bench 0.02).
        lam: mask-term weight (bench 0.1; UI 0.2).
        r1: motion-supervision patch radius, grid cells (4).
        r2: tracking window radius, grid cells (12).
        beta: largest motion step, grid cells (the official `d`: 4).
        track_per_step: tracking rounds per drag timestep at most (10).
        drag_per_track: Adam steps between two tracking rounds (the official `max_drag_per_track`: 3).
        max_no_change: tracking rounds in a row without any handle moving that end the drag phase (bench 5;
            UI 10).
        drag_loss_threshold: a tracking round also follows a step whose motion loss is <= this x (2 r1)^2
            (bench 0: never before the drag phase ends, as the reach check comes first).
        stop_distance: every handle closer than this to its target ends the drag phase; closer pairs are not
            supervised (2, hard-coded in the official code).
    """

    lr: float = 0.02
    lam: float = 0.1
    r1: int = 4
    r2: int = 12
    beta: float = 4.0
    track_per_step: int = 10
    drag_per_track: int = 3
    max_no_change: int = 5
    drag_loss_threshold: float = 0.0
    stop_distance: float = 2.0


@dataclass
class TimestepDrag:
    """What one drag timestep did (the official `gooddrag_step`).

    Attributes:
        timestep: DDPM timestep t.
        losses: total loss of each Adam step; motion_losses: its motion-supervision part.
        tracks: handles (N, 2) after each tracking round, the first-iteration one included.
        handles_rc: handles when the timestep ended.
        stopped: "reached", "no_change" or "" (all tracking rounds used).
    """

    timestep: int
    losses: list[float] = field(default_factory=list)
    motion_losses: list[float] = field(default_factory=list)
    tracks: list[list[list[float]]] = field(default_factory=list)
    handles_rc: torch.Tensor | None = None
    stopped: str = ""


@dataclass
class DragState:
    """What carries over between drag timesteps: handles, the no-change counter, whether to go on."""

    handles_rc: torch.Tensor
    handles_init_rc: torch.Tensor
    no_change: int = 0
    active: bool = True


def drag_at_timestep(
    latent: torch.Tensor,
    timestep: int,
    forward: TimestepForward,
    feats_ref: torch.Tensor,
    x_prev_ref: torch.Tensor,
    targets_rc: torch.Tensor,
    mask_latent: torch.Tensor,
    state: DragState,
    params: AlddParams,
) -> tuple[torch.Tensor, TimestepDrag]:
    """Optimise x_t at one timestep (updates `state` in place); returns the dragged latent and a record.

    Args:
        latent: (1, 4, h, w) the current (dragged) x_t, not modified.
        timestep: t.
        forward: UNet features and DDIM step for a latent at t (with gradients when the latent has them).
        feats_ref: (1, C, gh, gw) F0(t) of the original trajectory.
        x_prev_ref: (1, 4, h, w) the original trajectory's x_{t-1}.
        targets_rc: (N, 2) targets on the supervision grid.
        mask_latent: (1, 1, h, w) editable mask on the latent grid (1 = editable). The mask term is applied
            whatever the mask (the official code has no empty-mask case).
        state: handles, initial handles, no-change counter, active flag.
        params: the knobs.
    """
    record = TimestepDrag(timestep=timestep)
    z = latent.detach().to(torch.float32, copy=True).requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=params.lr)
    threshold = params.drag_loss_threshold * (2 * params.r1) ** 2
    first, rounds, since_track = True, 0, 0
    while rounds < params.track_per_step:
        optimizer.zero_grad()
        feats, x_prev = forward(z, timestep)
        if first:
            first = False
            state.handles_rc = track_points(feats, feats_ref, state.handles_rc, state.handles_init_rc, params.r2)
            record.tracks.append(state.handles_rc.tolist())
        if all_reached(state.handles_rc, targets_rc, params.stop_distance):
            state.active, record.stopped = False, "reached"
            break
        if state.no_change == params.max_no_change:
            state.active, record.stopped = False, "no_change"
            break
        motion = information_preserving_loss(
            feats,
            feats_ref,
            state.handles_rc,
            state.handles_init_rc,
            targets_rc,
            params.r1,
            params.beta,
            params.stop_distance,
        )
        loss = motion + mask_term(x_prev, x_prev_ref, mask_latent, params.lam)
        loss.backward()
        optimizer.step()
        motion_value = float(motion.detach()) if isinstance(motion, torch.Tensor) else float(motion)
        record.losses.append(float(loss.detach()))
        record.motion_losses.append(motion_value)
        since_track += 1
        if since_track == params.drag_per_track or motion_value <= threshold:
            rounds, since_track = rounds + 1, 0
            # tracked on F1 of this iteration, i.e. before the step just taken (as the official code)
            new = track_points(feats.detach(), feats_ref, state.handles_rc, state.handles_init_rc, params.r2)
            state.no_change = state.no_change + 1 if torch.equal(new, state.handles_rc) else 0
            state.handles_rc = new
            record.tracks.append(new.tolist())
    record.handles_rc = state.handles_rc.clone()
    log.debug(
        "t=%d: %d steps, handles %s, stop %r", timestep, len(record.losses), record.tracks[-1:], record.stopped
    )
    return z.detach(), record
