"""DragNoise's own pieces with numbers: the bottleneck override, the injection window (`end_step`), the always-on
mask term, the YAML, and the held-out check (real DragBench samples through `experiments.run`)."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from shared_data import OFFICIAL_REF, REAL_SAMPLES

from dragbench.diffusion.bottleneck import MidBlockOverride
from dragbench.diffusion.ddim import ddim_denoise, decode_latents
from dragbench.diffusion.drag_loop import drag_latent
from dragbench.sample import DragSample
from dragbench.synth import synthetic_samples
from methods.dragnoise.method import DragNoise

CONF = Path(__file__).resolve().parents[1] / "conf" / "method" / "dragnoise.yaml"
FAST = dict(lora_steps=0, max_iters=3, n_inference_steps=10, inversion_step=7)


@pytest.fixture(scope="module")
def sample() -> DragSample:
    return synthetic_samples(1, size=64, seed=0)[0]


def _z_t(backbone, shape=(1, 4, 8, 8)) -> tuple[torch.Tensor, object]:
    z = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    return z, backbone.condition("a photo")


def test_yaml_is_the_bench_and_matches_the_signature():
    cfg = OmegaConf.load(CONF)
    params = inspect.signature(DragNoise).parameters
    assert set(cfg) - {"_target_"} == set(params)
    bench = dict(
        inversion_step=35,
        end_step=0,
        bottleneck_lr=0.02,
        lam=0.2,
        max_iters=80,
        lora_steps=200,
        lora_lr=2e-4,
        lora_rank=16,
        r1=1,
        r2=3,
        unet_block=3,
    )  # run_drag_diffusion.py / run_lora_training.py of haofengl/DragNoise 1072731
    assert {k: cfg[k] for k in bench} == bench
    assert {k: params[k].default for k in bench} == bench
    assert "mutual self-attention" in CONF.read_text().lower()  # the bench never enables it: said next to end_step


def test_override_with_the_captured_bottleneck_changes_nothing_and_others_do(tiny_backbone):
    bb = tiny_backbone
    z, cond = _z_t(bb)
    with torch.no_grad():
        stock = bb.predict_noise(z, 681, cond)
        with MidBlockOverride(bb.unet) as override:
            same = bb.predict_noise(z, 681, cond)
            h = override.captured.clone()
            assert h.shape == (1, 64, 1, 1)  # tiny UNet: 64 channels at 1/8 of an 8x8 latent
            override.replacement = h
            replaced_same = bb.predict_noise(z, 681, cond)
            override.replacement = torch.zeros_like(h)
            zeroed = bb.predict_noise(z, 681, cond)
            override.replacement = h
            batch = bb.predict_noise(torch.cat([z, z]), 681, bb.condition(["a photo"] * 2))  # (1,...) expands
        after = bb.predict_noise(z, 681, cond)  # hook gone on exit
    assert torch.equal(stock, same) and torch.equal(stock, replaced_same) and torch.equal(stock, after)
    assert (zeroed - stock).abs().max() > 1e-3
    assert (batch[0] - stock[0]).abs().max() < 1e-5 and (batch[1] - stock[0]).abs().max() < 1e-5


def test_gradient_reaches_the_bottleneck_and_bad_shapes_fail(tiny_backbone):
    bb = tiny_backbone
    z, cond = _z_t(bb)
    with MidBlockOverride(bb.unet) as override:
        with torch.no_grad():
            bb.predict_noise(z, 681, cond)
        h = override.captured.detach().clone().requires_grad_(True)
        override.replacement = h
        bb.predict_noise(z, 681, cond).square().sum().backward()
        assert h.grad is not None and h.grad.abs().sum() > 0
        override.replacement = torch.zeros(1, 64, 2, 2)
        with pytest.raises(ValueError, match="capture it from the same latent size"):
            bb.predict_noise(z, 681, cond)


def test_end_step_sets_the_injection_window(tiny_backbone, sample):
    """end_step = n: no step injected (plain DDIM denoising, bit for bit); end_step 0 differs from that."""
    bb = tiny_backbone
    method = DragNoise(bb, **FAST)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    cond = bb.condition(sample.prompt)
    with MidBlockOverride(bb.unet) as override, torch.no_grad():
        bb.predict_noise(z, method.timestep, cond)
        h = override.captured.clone()
    with torch.no_grad():
        plain = decode_latents(bb, ddim_denoise(bb, z, cond, bb.scheduler.config, 10, 7))
    none = DragNoise(bb, **{**FAST, "end_step": 10}).denoise(sample.prompt, z, h)
    all_steps = method.denoise(sample.prompt, z, h)
    last_three = DragNoise(bb, **{**FAST, "end_step": 3}).denoise(sample.prompt, z, h)  # steps 3..6 of 7
    assert torch.equal(none, plain)
    assert (all_steps - plain).abs().max() > 1e-4  # measured 7e-4 (tiny random VAE decoder)
    assert 0 < (last_three - plain).abs().max() and (last_three - all_steps).abs().max() > 0


def test_mask_term_always_penalises_an_empty_mask():
    """DragNoise's loop adds lam * sum|x_prev - x_prev0| even for an empty mask; DragDiffusion's does not."""
    weights = torch.linspace(-1, 1, 4 * 4 * 4).reshape(1, 4, 4, 4)

    def forward(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = (v * weights).sum(dim=1, keepdim=True).expand(1, 2, 4, 4)
        return feats, v * 2.0

    args = dict(lr=0.1, max_iters=3, lam=0.5, stop_distance=2.0, tracker=lambda f, f0, h, h0: h)
    handles, targets = torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 3.0]])
    empty = torch.zeros(1, 1, 4, 4)
    v0 = torch.ones(1, 4, 4, 4)
    off = drag_latent(v0, forward, handles, targets, empty, **args)
    on = drag_latent(v0, forward, handles, targets, empty, mask_term_always=True, **args)
    assert on.losses[0] == off.losses[0]  # before the first step x_prev == x_prev0
    # step 0 is the same in both (|0| has gradient 0), so at step 1 both hold the same iterate: Adam moved the
    # 36 entries the motion term reaches by lr, and the extra term is lam * sum |2 * lr| = 0.5 * 36 * 0.2
    assert off.losses[1] == pytest.approx(0.990476, rel=1e-5)
    assert on.losses[1] - off.losses[1] == pytest.approx(0.5 * 36 * 2 * 0.1, rel=1e-5)


def test_edit_moves_only_the_bottleneck_and_is_deterministic(tiny_backbone, sample):
    bb = tiny_backbone
    method = DragNoise(bb, **FAST)
    trace = method.run(sample)
    assert trace.drag.latent.shape == trace.bottleneck0.shape == (1, 64, 1, 1)
    assert (trace.drag.latent - trace.bottleneck0).abs().max() > 1e-3  # 3 Adam steps of lr 0.02 moved it
    assert trace.drag.iterations == 3 and len(trace.drag.losses) == 3
    again = method.edit(sample)
    np.testing.assert_array_equal(again.image, trace.image)
    assert again.image.shape == (sample.height, sample.width, 3)
    assert again.info["bottleneck_shape"] == [1, 64, 1, 1] and again.info["iterations"] == 3
    assert not bb.unet.mid_block._forward_hooks  # the shared backbone is left as it was


def test_bad_knobs_fail_at_construction(tiny_backbone):
    with pytest.raises(ValueError, match="end_step"):
        DragNoise(tiny_backbone, end_step=51)
    with pytest.raises(ValueError, match="unet_block"):
        DragNoise(tiny_backbone, unet_block=5)


@pytest.mark.skipif(not (REAL_SAMPLES.is_dir() and OFFICIAL_REF.is_dir()), reason="shared data not found")
@pytest.mark.parametrize(
    ("resize", "sizes"),
    [
        pytest.param(128, [(184, 128)], id="resized-128"),
        # full size: ~110 s per sample and run on 2 busy cores (attention over 64x43 latent tokens)
        pytest.param(None, [(732, 512), (341, 512)], id="full-size", marks=pytest.mark.slow),
    ],
)
def test_held_out_real_samples_run_ok_same_size_and_deterministic(run_on_real_samples, resize, sizes):
    """`experiments.run method=dragnoise model=sd15 model.pretrained=<tiny> dataset=dragbench` on real
    interior_design samples (non-square; resized to width 128, or both at full size), knobs shrunk: status ok,
    output of the input's size, identical across two runs that share no cache."""
    images = []
    for run in ("a", "b"):
        rows, edits = run_on_real_samples(
            run,
            "method=dragnoise",
            "dataset.categories=[interior_design]",
            f"dataset.limit={len(sizes)}",
            f"dataset.resize={'null' if resize is None else resize}",
            "method.lora_steps=1",
            "method.lora_batch_size=1",
            "method.max_iters=2",
            "method.n_inference_steps=10",
            "method.inversion_step=7",
        )
        assert [r["status"] for r in rows] == ["ok"] * len(sizes), [r.get("error") for r in rows]
        assert [int(r["iterations"]) for r in rows] == [2] * len(sizes)
        images.append(edits)
    assert [im.shape[:2] for im in images[0]] == sizes  # the inputs' (H, W) (resize rounds to multiples of 8)
    for a, b in zip(*images, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # ~30 s on 2 busy cores: 4 LoRA-trained tiny edits
def test_lora_and_inversion_go_through_the_cache_and_a_sweep_trains_once(tiny_backbone, sample, tmp_path):
    """lora_plan_steps: the first point trains to the largest count; the next point and a repeat train nothing
    and invert nothing, and give the same image as without a cache."""
    from dragbench.cache import Cache
    from dragbench.diffusion.lora import LORA_STATS

    knobs = {**FAST, "lora_batch_size": 1, "lora_plan_steps": [1, 2]}

    def edit(lora_steps: int, cache: Cache | None):
        before = LORA_STATS["optimizer_steps"]
        result = DragNoise(tiny_backbone, cache=cache, **{**knobs, "lora_steps": lora_steps}).edit(sample)
        return result, LORA_STATS["optimizer_steps"] - before

    cache = Cache(tmp_path)
    first, trained1 = edit(1, cache)
    second, trained2 = edit(2, cache)
    repeat, trained3 = edit(1, cache)
    assert (trained1, trained2, trained3) == (2, 0, 0)
    # per snapshot: the first point misses steps 1 and 2, the others hit both
    assert cache.stats == {"lora/miss": 2, "lora/hit": 4, "inversion/miss": 2, "inversion/hit": 1}
    np.testing.assert_array_equal(repeat.image, first.image)
    uncached, trained = edit(2, None)
    assert trained == 2
    np.testing.assert_array_equal(uncached.image, second.image)
