"""DragDiffusion precision modes (issue 12.2): the per-stage plan, the casting it implies, and what each stage
sees, on CPU (torch's CPU fp16 autocast runs the same casting as CUDA's) and, when present, on CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dragbench.backbone import build_tiny
from dragbench.cache import Cache
from dragbench.diffusion import lora as lora_module
from dragbench.diffusion.drag_loop import drag_latent
from dragbench.diffusion.lora import LoraTrainer
from dragbench.diffusion.precision import (
    FP32,
    PLANS,
    StagePrecision,
    cast_copy,
    resolve_precision,
    weights_in,
)
from methods.dragdiffusion.method import DragDiffusion

OFFICIAL = PLANS["official_fp16"]
FAST = dict(lora_steps=2, max_iters=3, n_inference_steps=10, inversion_step=7)  # short tiny runs
LORA = dict(rank=4, alpha=4, batch_size=2, seed=0, train_size=64)


def _weights_sum(module: torch.nn.Module) -> float:
    return float(sum(p.double().sum() for p in module.parameters()))


# ---------------------------------------------------------------- the plan
def test_auto_resolves_by_device_and_unknown_modes_name_the_closest():
    assert resolve_precision("auto", torch.device("cuda")).name == "official_fp16"
    assert resolve_precision("auto", torch.device("cpu")).name == "fp32"
    assert resolve_precision("official_fp16", torch.device("cpu")) is OFFICIAL
    with pytest.raises(ValueError, match="did you mean 'official_fp16'") as err:
        resolve_precision("official_fp61", torch.device("cpu"))
    assert "\n" not in str(err.value)


def test_official_plan_is_the_official_dragbench_casting():
    # lora_utils.train_lora: UNet/VAE/text encoder .to(fp16), accelerate mixed_precision="fp16"
    assert OFFICIAL.lora == StagePrecision(weights=torch.float16, autocast=torch.float16)
    # run_drag_diffusion: fp32 pipeline; drag_diffusion_update: torch.autocast(cuda, fp16) + GradScaler
    assert OFFICIAL.drag == StagePrecision(weights=torch.float32, autocast=torch.float16)
    assert OFFICIAL.inversion == OFFICIAL.denoise == FP32  # pipeline calls without autocast
    assert OFFICIAL.lora.grad_scaling and OFFICIAL.drag.grad_scaling and not FP32.grad_scaling
    assert OFFICIAL.info() == {
        "precision": "official_fp16",
        "precision/lora": "weights float16, autocast float16 + GradScaler",
        "precision/inversion": "weights float32",
        "precision/drag": "weights float32, autocast float16 + GradScaler",
        "precision/denoise": "weights float32",
    }
    assert set(PLANS["fp32"].info().values()) == {"fp32", "weights float32"}


def test_bf16_autocast_has_no_grad_scaler():
    stage = StagePrecision(autocast=torch.bfloat16)
    assert not stage.grad_scaling and not stage.grad_scaler("cpu").is_enabled()
    assert stage.describe() == "weights float32, autocast bfloat16"


# ---------------------------------------------------------------- casting copies, never in place
def test_cast_copy_casts_every_float_tensor_and_leaves_the_original(tiny_backbone):
    unet = tiny_backbone.unet
    before = _weights_sum(unet)
    half = cast_copy(unet, torch.float16)
    assert {p.dtype for p in half.parameters()} == {torch.float16}
    assert {p.dtype for p in unet.parameters()} == {torch.float32} and _weights_sum(unet) == before
    for (name, p), q in zip(unet.named_parameters(), half.parameters(), strict=True):
        assert q.data_ptr() != p.data_ptr() and not q.requires_grad, name
        torch.testing.assert_close(q, p.half(), rtol=0, atol=0)


def test_weights_in_yields_the_backbone_itself_or_a_temporary_cast_copy(tiny_backbone):
    with weights_in(tiny_backbone, torch.float32) as same:
        assert same is tiny_backbone
    with weights_in(tiny_backbone, torch.float16) as half:
        assert half is not tiny_backbone and half.dtype == torch.float16
        assert half.tokenizer is tiny_backbone.tokenizer and half.scheduler is tiny_backbone.scheduler
        assert {p.dtype for m in (half.unet, half.vae, half.text_encoder) for p in m.parameters()} == {
            torch.float16
        }
        assert half.encode_prompt("a dog").dtype == torch.float16
    assert tiny_backbone.dtype == torch.float32
    assert {p.dtype for p in tiny_backbone.unet.parameters()} == {torch.float32}


# ---------------------------------------------------------------- drag loop: fp32 latent under fp16 autocast
class _RecordingForward:
    """latent -> (features, x_prev) through fp32 convs, recording the dtypes each call sees."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.feat = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.step = torch.nn.Conv2d(4, 4, 1)
        self.calls: list[dict] = []

    def __call__(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.feat(latent.float())  # (1, 8, h, w); fp16 under autocast
        x_prev = latent - 0.1 * self.step(latent.float())  # fp32 latent - fp16 conv under autocast -> fp32
        autocast = torch.is_autocast_enabled("cpu")
        self.calls.append(dict(latent=latent.dtype, feats=feats.dtype, autocast=autocast))
        return feats, x_prev


def _drag(forward, latent0: torch.Tensor, precision: StagePrecision):
    handles = torch.tensor([[4.0, 4.0]])
    targets = torch.tensor([[4.0, 12.0]])
    mask = torch.ones(1, 1, 16, 16)
    mask[..., :, 10:] = 0
    return drag_latent(latent0, forward, handles, targets, mask, lr=0.01, max_iters=4, lam=0.1,
                       stop_distance=2.0, precision=precision)


@pytest.mark.parametrize("latent_dtype", [torch.float32, torch.float16])
def test_drag_loop_optimises_an_fp32_latent_under_fp16_autocast_with_a_grad_scaler(latent_dtype):
    forward = _RecordingForward()
    latent0 = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)).to(latent_dtype)
    result = _drag(forward, latent0, OFFICIAL.drag)  # an fp16 latent0 used to raise "unscale FP16 gradients"
    assert result.latent.dtype == torch.float32 and result.steps == 4 and np.isfinite(result.losses).all()
    assert (result.latent - latent0.float()).abs().max() > 1e-3  # Adam moved it
    first, *loop = forward.calls
    assert first == dict(latent=latent_dtype, feats=torch.float32, autocast=False)  # F0: outside autocast
    assert len(loop) == 4
    assert all(c == dict(latent=torch.float32, feats=torch.float16, autocast=True) for c in loop)


def test_drag_loop_fp32_mode_has_no_autocast_and_matches_a_plain_adam_run():
    forward = _RecordingForward()
    latent0 = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    result = _drag(forward, latent0, FP32)
    assert all(c["feats"] == torch.float32 and not c["autocast"] for c in forward.calls)
    # the disabled GradScaler is a no-op: the first step equals one plain Adam step on the same loss
    again = _drag(_RecordingForward(), latent0, FP32)
    torch.testing.assert_close(result.latent, again.latent, rtol=0, atol=0)
    assert result.losses == again.losses


# ---------------------------------------------------------------- LoRA: fp16 copy, fp16 autocast, fp32 LoRA
def test_lora_official_trains_fp32_lora_weights_on_an_fp16_copy_under_autocast(tiny_backbone, tiny_samples,
                                                                                monkeypatch):
    seen: list[dict] = []
    loss_fn = lora_module.denoising_loss

    def recording_loss(model, scheduler, latents, noise, timesteps, cond):
        unet, text = model.unet, cond.encoder_hidden_states
        lora = [p for n, p in unet.named_parameters() if "lora_" in n]
        base = [p for n, p in unet.named_parameters() if "lora_" not in n]
        seen.append(dict(
            latents=latents.dtype, noise=noise.dtype, text=text.dtype, base={p.dtype for p in base},
            lora={p.dtype for p in lora}, autocast=torch.is_autocast_enabled("cpu"),
            shared=unet is tiny_backbone.unet,
        ))
        return loss_fn(model, scheduler, latents, noise, timesteps, cond)

    monkeypatch.setattr(lora_module, "denoising_loss", recording_loss)
    before = _weights_sum(tiny_backbone.unet)
    trainer = LoraTrainer(**LORA, precision=OFFICIAL.lora)
    sample = tiny_samples[0]
    snaps = trainer.snapshots(tiny_backbone, sample.image, sample.prompt, [0, 3])
    assert len(seen) == 3 and all(
        s == dict(latents=torch.float16, noise=torch.float16, text=torch.float16, autocast=True,
                  base={torch.float16}, lora={torch.float32}, shared=False)
        for s in seen
    )
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in snaps[3].values())
    assert np.isfinite(trainer.losses).all() and len(trainer.losses) == 3
    moved = max(float((snaps[3][k] - snaps[0][k]).abs().max()) for k in snaps[3])
    assert moved > 1e-4  # at least one step was not skipped by the GradScaler
    assert tiny_backbone.dtype == torch.float32 and _weights_sum(tiny_backbone.unet) == before
    assert not hasattr(tiny_backbone.unet, "peft_config")


def test_lora_official_resume_is_bit_exact_with_the_grad_scaler_state(tiny_backbone, tiny_samples, tmp_path):
    sample = tiny_samples[1]
    kwargs = dict(**LORA, precision=OFFICIAL.lora)
    fresh = LoraTrainer(**kwargs).snapshots(tiny_backbone, sample.image, sample.prompt, [3])[3]
    cache = Cache(tmp_path / "cache")
    LoraTrainer(**kwargs, cache=cache).snapshots(tiny_backbone, sample.image, sample.prompt, [1])
    resumed_trainer = LoraTrainer(**kwargs, cache=cache)
    resumed = resumed_trainer.snapshots(tiny_backbone, sample.image, sample.prompt, [3])[3]
    assert resumed_trainer.steps_taken == 2  # continued from step 1
    for key in fresh:
        torch.testing.assert_close(resumed[key], fresh[key], rtol=0, atol=0)
    # an fp32 run of the same sample is another cache entry, not a hit on the mixed-precision one
    fp32 = LoraTrainer(**LORA, cache=cache)
    fp32.snapshots(tiny_backbone, sample.image, sample.prompt, [1])
    assert fp32.steps_taken == 1


def test_lora_resume_state_carries_the_loss_scale_and_growth_tracker():
    p = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([p], lr=0.1)
    scaler = OFFICIAL.lora.grad_scaler("cpu")
    scaler.load_state_dict({**scaler.state_dict(), "scale": 1024.0, "_growth_tracker": 7})
    # AdamW has no state yet (every step so far skipped): saved as zeros at step 0
    state = lora_module._training_state({"w": p}, optimizer, torch.Generator(), scaler)
    assert state["grad_scaler"].tolist() == [1024.0, 7.0] and state["adam_step"].item() == 0
    restored = OFFICIAL.lora.grad_scaler("cpu")
    lora_module._restore_training_state(state, {"w": p}, optimizer, torch.Generator(), restored)
    assert restored.get_scale() == 1024.0 and restored.state_dict()["_growth_tracker"] == 7


# ---------------------------------------------------------------- the method
def test_method_official_fp16_end_to_end_on_cpu_records_its_plan(tiny_backbone, tiny_samples):
    before = _weights_sum(tiny_backbone.unet)
    method = DragDiffusion(tiny_backbone, precision="official_fp16", **FAST)
    result = method.edit(tiny_samples[0])
    assert result.status == "ok" and result.image.dtype == np.uint8
    assert {k: v for k, v in result.info.items() if k.startswith("precision")} == OFFICIAL.info()
    assert np.isfinite(result.info["losses"]).all() and result.info["optimizer_steps"] >= 1
    assert tiny_backbone.dtype == torch.float32 and _weights_sum(tiny_backbone.unet) == before


def test_method_auto_on_cpu_is_fp32_bit_for_bit(tiny_backbone, tiny_samples):
    knobs = {**FAST, "lora_steps": 0}
    auto = DragDiffusion(tiny_backbone, **knobs)
    assert auto.precision_plan is PLANS["fp32"]
    a = auto.edit(tiny_samples[1])
    b = DragDiffusion(tiny_backbone, **knobs, precision="fp32").edit(tiny_samples[1])
    np.testing.assert_array_equal(a.image, b.image)
    assert a.info["precision"] == "fp32" and a.info["losses"] == b.info["losses"]


def test_half_precision_weights_fail_at_construction_with_one_line_naming_the_knobs():
    half = build_tiny(seed=0, device="cpu", dtype="float16")
    with pytest.raises(ValueError, match="model.dtype=float16") as err:
        DragDiffusion(half, **FAST)
    assert "\n" not in str(err.value) and "method.precision" in str(err.value)


# ---------------------------------------------------------------- CUDA (skips without a GPU)
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="Requires: a CUDA device")
def test_official_fp16_on_cuda_is_the_auto_default_and_runs(tiny_samples):
    backbone = build_tiny(seed=0, device="cuda")
    method = DragDiffusion(backbone, **FAST)
    assert method.precision_plan is OFFICIAL
    result = method.edit(tiny_samples[0])
    assert result.status == "ok" and result.info["precision"] == "official_fp16"
    assert np.isfinite(result.info["losses"]).all()
