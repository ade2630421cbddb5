"""Known-answer tests for DragDiffusion's pure math: geometry, tracking, motion supervision, mask, loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dragbench.diffusion.drag_loop import drag_latent
from dragbench.diffusion.mask_term import mask_term, mask_to_latent
from dragbench.diffusion.motion_supervision import (
    PatchMotionSupervision,
    motion_supervision_loss,
    sample_shifted_patch,
)
from dragbench.diffusion.point_tracking import (
    NearestNeighbourTracker,
    all_reached,
    clipped_window,
    track_points,
)
from dragbench.diffusion.supervision_grid import grid_rc_to_xy, supervision_grid_size, xy_to_grid_rc


# ---------------------------------------------------------------- geometry
def test_grid_size_is_half_image_truncated():
    assert supervision_grid_size(768, 512) == (384, 256)
    assert supervision_grid_size(341, 512) == (170, 256)  # int(0.5 * 341)


def test_xy_grid_xy_roundtrip_on_512x768():
    image_hw, grid_hw = (768, 512), supervision_grid_size(768, 512)
    xy = np.array([[0.0, 0.0], [510.0, 766.0], [128.0, 300.0], [2.0, 4.0]])  # even pixels -> exact cells
    rc = xy_to_grid_rc(xy, image_hw, grid_hw)
    assert rc.dtype == torch.float32
    assert rc.tolist() == [[0, 0], [383, 255], [150, 64], [2, 1]]
    np.testing.assert_array_equal(grid_rc_to_xy(rc, image_hw, grid_hw), xy)


def test_xy_to_grid_rounds_halves_to_even_like_the_official_code():
    # official-ref README "Coordinates": interior_design_2 (128x88, grid 44x64) rows 17.5->18, 11.5->12,
    # cols 21.5->22, 26.5->26.
    rc = xy_to_grid_rc(np.array([[43, 35], [53, 23]]), (88, 128), (44, 64))
    assert rc.tolist() == [[18, 22], [12, 26]]


def test_points_on_the_last_pixel_stay_on_the_grid():
    # 127 / 128 * 64 = 63.5 -> rounds to 64 (half to even), one past the last grid cell: clamped to 63.
    assert xy_to_grid_rc(np.array([[127.0, 127.0]]), (128, 128), (64, 64)).tolist() == [[63, 63]]


def test_grid_to_xy_uses_image_over_grid_scale():
    # 341 rows -> 170 grid rows: y = row * 341 / 170 (README "Back to pixels").
    xy = grid_rc_to_xy(torch.tensor([[50.0, 10.0]]), (341, 512), (170, 256))
    np.testing.assert_allclose(xy, [[20.0, 50 * 341 / 170]])


# ---------------------------------------------------------------- windows and sampling
@pytest.mark.parametrize(
    ("center", "radius", "expected"),
    [
        ((5, 5), 3, (2, 9, 2, 9)),
        ((0, 0), 3, (0, 4, 0, 4)),
        ((9, 8), 3, (6, 10, 5, 10)),
        ((0, 9), 1, (0, 2, 8, 10)),
    ],
)
def test_clipped_window(center, radius, expected):
    assert clipped_window(torch.tensor(center, dtype=torch.float32), radius, (10, 10)) == expected


def _ramp(h: int = 10, w: int = 12, a: float = 3.0, b: float = 0.5) -> torch.Tensor:
    rows = torch.arange(h, dtype=torch.float32)[:, None]
    cols = torch.arange(w, dtype=torch.float32)[None, :]
    return (a * rows + b * cols)[None, None]  # (1, 1, h, w), linear in (row, col)


def test_shifted_patch_is_exact_on_a_linear_map():
    feats = _ramp()
    shift = torch.tensor([0.6, -0.8])
    patch = sample_shifted_patch(feats, (3, 6, 4, 7), shift)
    rows = torch.arange(3, 6).float()[:, None] + 0.6
    cols = torch.arange(4, 7).float()[None, :] - 0.8
    torch.testing.assert_close(patch[0, 0], 3.0 * rows + 0.5 * cols, rtol=0, atol=1e-5)


def test_shifted_patch_clamps_at_the_border():
    feats = _ramp()
    patch = sample_shifted_patch(feats, (8, 10, 0, 2), torch.tensor([0.5, -0.5]))  # beyond bottom and left
    # rows 8.5, 9.5 -> rows clamp to 9 beyond the grid; cols -0.5, 0.5 -> col -1 clamps to 0.
    expected = torch.tensor([[3 * 8.5 + 0.0, 3 * 8.5 + 0.25], [3 * 9.0 + 0.0, 3 * 9.0 + 0.25]])
    torch.testing.assert_close(patch[0, 0], expected, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- motion supervision
def test_motion_supervision_known_value_and_fixed_factor_nine():
    feats = _ramp(a=0.0, b=1.0).requires_grad_(True)  # feature = column index
    # d = (0, 1): the moved patch is the reference + 1 -> mean |diff| = 1 -> loss = 9.
    loss = motion_supervision_loss(feats, torch.tensor([[5.0, 5.0]]), torch.tensor([[5.0, 9.0]]), r1=1)
    assert float(loss.detach()) == pytest.approx(9.0, abs=1e-5)
    # clipped patch at the top border (2x3 pixels): still factor 9, not 6.
    loss_border = motion_supervision_loss(feats, torch.tensor([[0.0, 5.0]]), torch.tensor([[0.0, 9.0]]), r1=1)
    assert float(loss_border.detach()) == pytest.approx(9.0, abs=1e-5)
    # diagonal direction on feature = 2*row + col: shift (0.6, 0.8) -> mean diff 2*0.6+0.8 = 2.0 -> 18.
    feats2 = _ramp(a=2.0, b=1.0)
    loss2 = motion_supervision_loss(feats2, torch.tensor([[4.0, 4.0]]), torch.tensor([[7.0, 8.0]]), r1=1)
    assert float(loss2) == pytest.approx(18.0, abs=1e-4)


def test_motion_supervision_gradient_only_through_the_moved_patch():
    feats = _ramp(a=0.0, b=1.0).requires_grad_(True)
    loss = motion_supervision_loss(feats, torch.tensor([[5.0, 5.0]]), torch.tensor([[5.0, 9.0]]), r1=1)
    loss.backward()
    grad = feats.grad[0, 0]
    # moved patch = columns 5..7 at integer shift 1 (weights 1 on the column+1 patches); reference detached.
    touched = {tuple(rc) for rc in torch.nonzero(grad).tolist()}
    assert touched == {(r, c) for r in (4, 5, 6) for c in (5, 6, 7)}
    torch.testing.assert_close(grad[4:7, 5:8], torch.full((3, 3), 1.0))  # 9 * (1/9) * sign(+1)


def test_pairs_closer_than_two_contribute_nothing():
    feats = _ramp(a=0.0, b=1.0)
    near = motion_supervision_loss(feats, torch.tensor([[5.0, 5.0]]), torch.tensor([[6.0, 6.0]]), r1=1)
    assert near == 0.0  # distance sqrt(2) < 2: skipped
    two = motion_supervision_loss(
        feats, torch.tensor([[5.0, 5.0], [2.0, 2.0]]), torch.tensor([[5.0, 7.0], [3.0, 2.0]]), r1=1
    )
    assert float(two) == pytest.approx(9.0, abs=1e-5)  # only the first pair (distance exactly 2) counts


# ---------------------------------------------------------------- tracking and stopping
def test_track_points_finds_the_initial_feature_in_the_window():
    feats0 = torch.zeros(1, 3, 12, 12)
    feats0[0, :, 5, 5] = torch.tensor([1.0, 2.0, 3.0])
    feats = torch.zeros(1, 3, 12, 12)
    feats[0, :, 7, 4] = torch.tensor([1.0, 2.0, 3.1])  # within r2 = 3 of the current handle (6, 6)
    feats[0, :, 11, 11] = torch.tensor([1.0, 2.0, 3.0])  # exact match, but outside the window
    new = track_points(feats, feats0, torch.tensor([[6.0, 6.0]]), torch.tensor([[5.0, 5.0]]), r2=3)
    assert new.tolist() == [[7.0, 4.0]]


def test_track_points_reference_is_the_initial_handle_and_ties_go_row_major():
    feats0 = torch.zeros(1, 1, 10, 10)
    feats0[0, 0, 1, 1] = 5.0  # initial handle's feature
    feats = torch.zeros(1, 1, 10, 10)
    feats[0, 0, 0, 3] = 5.0
    feats[0, 0, 2, 0] = 5.0  # same distance 0: (0, 3) comes first in row-major order
    new = track_points(feats, feats0, torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 1.0]]), r2=3)
    assert new.tolist() == [[0.0, 3.0]]


def test_stop_rule_is_strictly_below_the_distance():
    targets = torch.tensor([[10.0, 10.0], [0.0, 0.0]])
    assert all_reached(torch.tensor([[10.0, 11.9], [1.0, 1.0]]), targets, 2.0)
    assert not all_reached(torch.tensor([[10.0, 12.0], [0.0, 0.0]]), targets, 2.0)


# ---------------------------------------------------------------- mask term
def test_mask_to_latent_nearest_twice():
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[:, 8:] = True
    m = mask_to_latent(mask, (8, 8), (2, 2))
    assert m.tolist() == [[[[0.0, 1.0], [0.0, 1.0]]]]


def test_mask_term_sums_outside_the_editable_region():
    m = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])
    x_prev0 = torch.zeros(1, 4, 2, 2)
    x_prev = torch.full((1, 4, 2, 2), 0.5)
    # 4 channels x 2 outside cells x 0.5 = 4.0, times lam 0.1
    assert float(mask_term(x_prev, x_prev0, m, 0.1)) == pytest.approx(0.4)


# ---------------------------------------------------------------- the loop on an analytic feature map
def _blob(h: int, w: int, center: tuple[float, float], sigma: float) -> torch.Tensor:
    rows = torch.arange(h, dtype=torch.float32)[:, None]
    cols = torch.arange(w, dtype=torch.float32)[None, :]
    return torch.exp(-((rows - center[0]) ** 2 + (cols - center[1]) ** 2) / (2 * sigma**2))


def _analytic_forward(latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Features = 3x3 box blur of the latent, bilinearly upsampled 2x; the 'DDIM step' is the identity."""
    blurred = F.avg_pool2d(latent, 3, stride=1, padding=1, count_include_pad=False)  # (1, 4, 16, 16)
    return F.interpolate(blurred, (32, 32), mode="bilinear"), latent  # (1, 4, 32, 32)


def _drag_blob(lam: float):
    latent0 = torch.zeros(1, 4, 16, 16)
    latent0[0, 0] = _blob(16, 16, (8, 5), 1.5)
    latent0[0, 1] = 0.5 * _blob(16, 16, (8, 5), 3.0)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 7:10, 3:12] = 1.0
    result = drag_latent(
        latent0,
        _analytic_forward,
        torch.tensor([[16.0, 10.0]]),
        torch.tensor([[16.0, 20.0]]),
        mask,
        lr=0.05,
        max_iters=60,
        lam=lam,
        stop_distance=2.0,
    )
    return latent0, mask, result


def test_drag_moves_a_blob_toward_the_target_and_tracking_follows():
    latent0, _, result = _drag_blob(lam=0.0)
    weights = result.latent[0, 0].clamp(min=0)
    centroid_col = float((weights * torch.arange(16)).sum() / weights.sum())
    # the blob starts at latent column 5, the target is column 10: distance 5 -> clearly smaller.
    assert 10 - centroid_col < 5 - 1.0
    assert result.reached and result.steps == result.iterations - 1
    assert float((result.handles_rc[0] - torch.tensor([16.0, 20.0])).norm()) < 2.0
    assert result.trajectory[0].tolist() == [[16.0, 10.0]]
    assert len(result.losses) == result.steps
    assert torch.equal(latent0[0, 0], _blob(16, 16, (8, 5), 1.5))  # input untouched


def test_empty_mask_means_no_mask_term():
    latent0 = torch.zeros(1, 4, 16, 16)
    latent0[0, 0] = _blob(16, 16, (8, 5), 1.5)
    runs = [
        drag_latent(
            latent0,
            _analytic_forward,
            torch.tensor([[16.0, 10.0]]),
            torch.tensor([[16.0, 20.0]]),
            torch.zeros(1, 1, 16, 16),
            lr=0.05,
            max_iters=3,
            lam=lam,
            stop_distance=2.0,
        )
        for lam in (0.0, 100.0)
    ]
    assert runs[0].losses == runs[1].losses and torch.equal(runs[0].latent, runs[1].latent)


def test_large_lambda_protects_the_region_outside_the_mask():
    latent0, mask, free = _drag_blob(lam=0.0)
    _, _, held = _drag_blob(lam=1.0)

    def mean_change(result, region):
        return float(((result.latent - latent0).abs() * region).sum() / (4 * region.sum()))

    assert mean_change(free, 1 - mask) > 0.005  # without the term the blur leaks changes outside
    assert mean_change(held, 1 - mask) < 0.1 * mean_change(free, 1 - mask)
    assert mean_change(held, 1 - mask) < 0.05 * mean_change(held, mask)


def test_tracker_and_motion_loss_are_parameters_with_dragdiffusions_as_defaults():
    latent0, mask, default = _drag_blob(lam=0.0)
    args = (latent0, _analytic_forward, torch.tensor([[16.0, 10.0]]), torch.tensor([[16.0, 20.0]]), mask)
    knobs = dict(lr=0.05, max_iters=60, lam=0.0, stop_distance=2.0)
    explicit = drag_latent(*args, **knobs, tracker=NearestNeighbourTracker(3),
                           motion_loss=PatchMotionSupervision(1, skip_distance=2.0))
    assert explicit.losses == default.losses and torch.equal(explicit.latent, default.latent)
    calls = {"tracker": 0, "loss": 0}

    def frozen_tracker(feats, feats0, handles, handles_init):  # never moves the handles
        calls["tracker"] += 1
        return handles

    def counting_loss(feats, handles, targets):
        calls["loss"] += 1
        return feats.pow(2).mean()

    four = {**knobs, "max_iters": 4}
    swapped = drag_latent(*args, **four, tracker=frozen_tracker, motion_loss=counting_loss)
    assert calls == {"tracker": 3, "loss": 4} and not swapped.reached  # tracking from iteration 2 on
    assert all(t.tolist() == [[16.0, 10.0]] for t in swapped.trajectory)
