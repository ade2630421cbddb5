"""GoodDrag (methods/gooddrag): its own pieces with numbers, the early-stop rules, the toy world and the
held-out real-sample check (tiny SD-1.5 weights on real DragBench samples: ok, same size, deterministic)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from shared_data import OFFICIAL_REF, REAL_SAMPLES

from methods.gooddrag.aldd import AlddParams, DragState, drag_at_timestep
from methods.gooddrag.information_preserving import information_preserving_loss


def _coordinate_features(h: int, w: int) -> torch.Tensor:
    """(1, 2, h, w): channel 0 = row, channel 1 = column (a unique L1 nearest neighbour everywhere)."""
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    return torch.stack([rows, cols])[None]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        # |d| = beta = 4: moved patch centred on column 10 + 4 = 14 vs fixed patch at the initial column 5
        ((10.0, 20.0), 16 * (0 + 9) / 2),
        # remaining distance 3 < beta: |d| = 3, column 13 vs 5
        ((10.0, 13.0), 16 * (0 + 8) / 2),
        # within 2 cells: nothing to supervise
        ((10.0, 11.0), 0.0),
    ],
)
def test_information_preserving_loss_uses_the_initial_patch_a_beta_step_and_weight_2r1_squared(target, expected):
    feats = _coordinate_features(32, 32)
    loss = information_preserving_loss(
        feats,
        feats_ref=feats,  # F0(t): the same coordinate map, read at the INITIAL handle (10, 5)
        handles_rc=torch.tensor([[10.0, 10.0]]),
        handles_init_rc=torch.tensor([[10.0, 5.0]]),
        targets_rc=torch.tensor([target]),
        r1=2,
        beta=4.0,
    )
    # weight (2 r1)^2 = 16 (not (2 r1 + 1)^2 = 25); mean over the 2 channels of |row diff| = 0 and |col diff|
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def _fake_forward(h: int = 24, w: int = 24):
    """Features that never move (the coordinate map, kept differentiable) and x_{t-1} = x_t."""
    base = _coordinate_features(h, w)

    def forward(latent: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        return base + 0.0 * latent.mean(), latent

    return base, forward


def _drag(handles, targets, no_change=0, **params):
    base, forward = _fake_forward()
    state = DragState(handles_rc=torch.tensor(handles), handles_init_rc=torch.tensor(handles), no_change=no_change)
    latent = torch.zeros(1, 4, 6, 6)
    z, record = drag_at_timestep(
        latent,
        741,
        forward,
        base,
        latent,
        torch.tensor(targets),
        torch.zeros(1, 1, 6, 6),
        state,
        AlddParams(r1=1, r2=3, **params),
    )
    return state, record


def test_reached_targets_end_the_drag_before_any_step():
    state, record = _drag([[10.0, 10.0]], [[11.0, 10.0]])
    assert record.stopped == "reached" and not state.active
    assert record.losses == [] and len(record.tracks) == 1  # only the first-iteration tracking round


def test_rounds_without_motion_end_the_drag_and_the_counter_carries_over():
    # the features never change, so every tracking round leaves the handle where it is
    state, record = _drag([[10.0, 10.0]], [[10.0, 20.0]], max_no_change=2)
    assert record.stopped == "no_change" and not state.active and state.no_change == 2
    assert len(record.losses) == 2 * 3  # two rounds of drag_per_track = 3 Adam steps, then the stop check
    state, record = _drag([[10.0, 10.0]], [[10.0, 20.0]], no_change=1, max_no_change=2)  # from the last timestep
    assert len(record.losses) == 3 and record.stopped == "no_change"


def test_a_timestep_runs_at_most_track_per_step_rounds():
    state, record = _drag([[10.0, 10.0]], [[10.0, 20.0]], max_no_change=100, track_per_step=4, drag_per_track=2)
    assert record.stopped == "" and state.active
    assert len(record.losses) == 4 * 2 and len(record.tracks) == 1 + 4


@pytest.mark.slow
def test_toy_world_object_moves_toward_the_target():
    from dragbench.toy.model import WEIGHTS_DIR, load_toy_backbone
    from dragbench.toy.samples import toy_sample
    from eval.toy_ground_truth import gt_image_metrics, gt_pair_distances
    from methods.gooddrag.method import GoodDrag

    if not (WEIGHTS_DIR / "model_index.json").exists():
        pytest.skip("toy weights not committed")
    sample = toy_sample(0, seed=0)  # a disc dragged 8.6 px (benchmarks/toy_world.py: scene 0)
    edit = GoodDrag(load_toy_backbone(device="cpu"), lora_steps=0).edit(sample)
    before, _ = gt_pair_distances(sample, sample.image)
    after, found = gt_pair_distances(sample, edit.image)
    assert found.all()
    assert after.mean() < 0.7 * before.mean()
    assert gt_image_metrics(sample, edit.image)["lost_objects"] == 0


HELD_OUT = "animals/animal_1"
NEEDS_REAL = pytest.mark.skipif(
    not (REAL_SAMPLES.is_dir() and (OFFICIAL_REF / "tiny-sd15").is_dir()),
    reason=f"real DragBench samples or tiny SD-1.5 weights not found under {REAL_SAMPLES.parent}",
)


def _held_out_twice(width: int | None, **knobs):
    from dragbench import load_sample
    from dragbench.backbone import load_pretrained
    from dragbench.bench_io import resize
    from methods.gooddrag.method import GoodDrag

    backbone = load_pretrained(str(OFFICIAL_REF / "tiny-sd15"), local_files_only=True, device="cpu")
    method = GoodDrag(backbone, vae="auto", **knobs)
    assert method.vae_label == "own"  # a local folder: the backbone's own VAE (sd-vae-ft-mse cannot exist)
    sample = load_sample(REAL_SAMPLES / HELD_OUT)
    sample = sample if width is None else resize(sample, width)
    first, second = method.edit(sample), method.edit(sample)
    assert first.status == "ok" and first.image.shape == sample.image.shape and first.image.dtype == np.uint8
    assert np.array_equal(first.image, second.image) and np.array_equal(first.handles, second.handles)
    assert first.info["vae"] == "own" and first.info["drag_timestep"] == 741
    return first


@NEEDS_REAL
def test_held_out_real_sample_at_128px_is_ok_same_size_and_deterministic():
    edit = _held_out_twice(128, lora_steps=2)  # LoRA path (SDPA attention), every other knob at the bench value
    assert edit.info["iterations"] > 0 and edit.info["stop_reason"] in ("reached", "no_change", "drag_end_step")


@pytest.mark.slow
@NEEDS_REAL
def test_held_out_real_sample_at_native_512px_is_ok_same_size_and_deterministic():
    # 512 px on the tiny weights has SD-1.5's 4096-token attention: shrink the loop, keep the path
    edit = _held_out_twice(None, lora_steps=2, drag_end_step=1, track_per_step=1)
    assert 0 < edit.info["iterations"] <= 3
