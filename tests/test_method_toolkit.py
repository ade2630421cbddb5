"""Known answers for the toolkit pieces the DragDiffusion-family methods share (one home each): `to_uint8`,
`inversion_key` / `lora_digest`, `PerImageLora`, `attention_for`, `grid_points`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor

from dragbench.backbone import build_tiny
from dragbench.diffusion.attention import attention_for
from dragbench.diffusion.ddim import check_inversion_step, drag_timestep, inversion_key, to_uint8
from dragbench.diffusion.features import check_unet_block
from dragbench.diffusion.lora import PerImageLora, lora_digest
from dragbench.diffusion.precision import StagePrecision, require_float32_weights
from dragbench.diffusion.supervision_grid import grid_points, points_record
from methods.base import StageTimes, required_info


def test_to_uint8_truncates_or_rounds_and_resizes_only_when_sizes_differ() -> None:
    image = torch.tensor([0.0, 0.5, 0.999, 1.0]).reshape(1, 1, 2, 2).expand(1, 3, 2, 2)
    assert to_uint8(image, (2, 2))[..., 0].tolist() == [[0, 127], [254, 255]]  # 127.5 -> 127, 254.7 -> 254
    assert to_uint8(image, (2, 2), rounding="round")[..., 0].tolist() == [[0, 128], [255, 255]]
    flat = torch.full((1, 3, 8, 8), 0.25)
    resized = to_uint8(flat, (5, 7))
    assert resized.shape == (5, 7, 3) and resized.dtype == np.uint8 and set(resized.ravel().tolist()) == {63}
    with pytest.raises(ValueError, match="choose 'truncate' or 'round'"):
        to_uint8(flat, (8, 8), rounding="nearest")  # type: ignore[arg-type]


def test_inversion_key_names_lora_attention_and_autocast() -> None:
    state = {"b": torch.ones(2), "a": torch.zeros(1, 2)}
    # the formula DragDiffusion and GoodDrag used before the move (sorted keys, each key then its tensor's raw
    # bytes): their key fields stay as they were
    assert lora_digest(state) == "d37ecc91eb5ec1a101b3565b79d4316a1394c81839ef570d356355cf26e1b1bb"
    assert lora_digest(state) == lora_digest(dict(reversed(list(state.items()))))
    assert lora_digest(state) != lora_digest({**state, "b": torch.tensor([1.0, 2.0])})
    assert inversion_key("a cat", None) == {"prompt": "a cat", "lora_sha256": None, "attention": "classic"}
    key = inversion_key("a cat", state, StagePrecision(autocast=torch.float16))
    assert key == {
        "prompt": "a cat",
        "lora_sha256": lora_digest(state),
        "attention": "sdpa",
        "autocast": "torch.float16",
    }
    assert "autocast" not in inversion_key("a cat", state, StagePrecision())


def test_per_image_lora_without_steps_trains_and_applies_nothing() -> None:
    lora = PerImageLora(0, rank=4, plan_steps=(40, 0, 20, 40))
    assert lora.plan_steps == (20, 40)  # a sweep's list as written: sorted, unique, no "no LoRA" 0
    assert lora.train(backbone=None, image=np.zeros((8, 8, 3), np.uint8), prompt="") is None  # type: ignore[arg-type]
    unet = torch.nn.Linear(2, 2)
    with lora.applied(unet, None):
        assert not any("lora" in name for name, _ in unet.named_parameters())
    with pytest.raises(ValueError, match="set method.lora_steps"):
        PerImageLora(-1)


def test_attention_for_switches_to_classic_only_without_lora(tiny_backbone) -> None:
    unet = tiny_backbone.unet
    before = dict(unet.attn_processors)
    assert not all(isinstance(p, AttnProcessor) for p in before.values())
    with attention_for(unet, lora_active=True):
        assert dict(unet.attn_processors) == before
    with attention_for(unet, lora_active=False):
        assert all(isinstance(p, AttnProcessor) for p in unet.attn_processors.values())
    assert dict(unet.attn_processors) == before


def test_grid_points_are_on_the_half_size_grid() -> None:
    handles, targets = np.array([[10.0, 20.0]]), np.array([[63.0, 5.0]])  # (x, y) pixels of a 64 x 64 image
    grid_hw, handles_rc, targets_rc = grid_points((64, 64), handles, targets, "cpu")
    assert grid_hw == (32, 32)
    assert handles_rc.tolist() == [[10.0, 5.0]]  # (row, col) = (y / 2, x / 2)
    assert targets_rc.tolist() == [[2.0, 31.0]]  # 2.5 -> 2 (half to even); 31.5 -> 32 clamped to 31


def test_points_record_is_plain_lists_of_the_grid_and_points() -> None:
    rc = torch.tensor([[1.0, 2.0]])
    record = points_record((32, 48), rc, rc + 3, rc + 5)
    assert record == {
        "supervision_grid_hw": [32, 48],
        "handles_init_rc": [[1.0, 2.0]],
        "handles_final_rc": [[4.0, 5.0]],
        "targets_rc": [[6.0, 7.0]],
    }


def test_required_info_carries_iterations_stage_times_and_peak_memory() -> None:
    times = StageTimes()
    with times.stage("drag"):
        pass
    info = required_info(times.seconds, 7, "cpu")
    assert sorted(info) == ["iterations", "peak_mem_mb", "time/drag"]
    assert info["iterations"] == 7 and info["time/drag"] >= 0 and info["peak_mem_mb"] > 0


def test_knob_checks_name_the_knob_and_its_range_in_one_line(tiny_backbone) -> None:
    n_blocks = len(tiny_backbone.unet.up_blocks)
    assert check_unet_block(tiny_backbone.unet, 3) == 2  # 1-based knob -> up_blocks index
    for bad in (0, n_blocks + 1):
        with pytest.raises(ValueError, match=f"unet_block must be in 1..{n_blocks}"):
            check_unet_block(tiny_backbone.unet, bad)
    check_inversion_step(50, 50)
    for bad in (0, 51):
        with pytest.raises(ValueError, match="inversion_step must be in 1..n_inference_steps=50"):
            check_inversion_step(bad, 50)
    with pytest.raises(ValueError, match="inversion_step"):
        drag_timestep(tiny_backbone.scheduler.config, 50, 51)  # the same check guards the timestep


def test_half_weights_are_refused_with_the_fix() -> None:
    require_float32_weights(build_tiny(seed=0), "X")  # float32 passes
    half = build_tiny(seed=0, dtype="float16")
    with pytest.raises(ValueError, match=r"model.dtype=float16: X needs float32.*method.precision") as err:
        require_float32_weights(half, "X")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"X runs in float32 here; set model.dtype=float32$"):
        require_float32_weights(half, "X", precision_knob=False)
