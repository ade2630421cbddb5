"""DragDiffusion LoRA (protocol §2 "LoRA" row), tiny backbone: learning, snapshots, apply/remove, I/O, cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from safetensors.torch import save_file

from dragbench.backbone import build_tiny
from dragbench.diffusion.lora import (
    LORA_STATS,
    LoraTrainer,
    denoising_loss,
    load_lora,
    lora_applied,
    lora_snapshots,
    save_lora,
)
from dragbench.diffusion.lora_augment import (
    CropLatentSampler,
    random_crop_offsets,
    resize_shorter_side,
    to_model_range,
)

PROMPT = "a photo of a striped cat"
SIZE = 64  # 64 px image -> 8x8 latent: the smallest the tiny SD topology (3 downsamples) accepts
STEPS = [0, 3, 20, 40]


def _image() -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    return np.stack([(xx * 4) % 256, (yy * 4) % 256, ((xx + yy) * 2) % 256], axis=-1).astype(np.uint8)


class DictCache:
    """In-memory stand-in for dragbench.cache.Cache (same get_or_compute contract)."""

    def __init__(self):
        self.store: dict[str, dict[str, torch.Tensor]] = {}
        self.calls: list[tuple[str, int]] = []

    def get_or_compute(self, namespace, inputs, compute, producers=None):
        key = json.dumps([namespace, inputs], sort_keys=True)
        hit = key in self.store
        self.calls.append(("hit" if hit else "miss", inputs["step"]))
        if not hit:
            self.store[key] = {k: v.clone() for k, v in compute().items()}
        return {k: v.clone() for k, v in self.store[key].items()}


@pytest.fixture(scope="module")
def backbone():
    return build_tiny()


@pytest.fixture(scope="module")
def snaps(backbone):
    """One training run to 40 steps with the protocol §2 defaults (lr 5e-4, batch 4, seed 42), 64 px crops."""
    return lora_snapshots(backbone, _image(), PROMPT, STEPS, train_size=SIZE)


def _unet_state(unet):
    return {k: v.detach().clone() for k, v in unet.state_dict().items()}


def _assert_unet_pristine(unet, before):
    after = unet.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert not any("lora" in n for n, _ in unet.named_modules())
    assert not any(type(m).__module__.startswith("peft") for m in unet.modules())
    assert not hasattr(unet, "peft_config") and not getattr(unet, "_hf_peft_config_loaded", False)
    assert not unet.training
    assert not any(p.requires_grad or p.grad is not None for p in unet.parameters())


def _eval_batch(backbone, n=16, seed=123):
    """A fixed evaluation set: the image's posterior-mean latent with n fixed (t, ε) pairs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z0 = backbone.vae.encode(to_model_range(_image())[None]).latent_dist.mean * backbone.latent_scale
    z0 = z0.expand(n, -1, -1, -1)  # (n, 4, 8, 8)
    noise = torch.randn(z0.shape, generator=g)
    t = torch.randint(0, 1000, (n,), generator=g)
    return z0, noise, t, backbone.condition(PROMPT).expand(n)


# --- augmentation -----------------------------------------------------------------------------------------


def test_resize_shorter_side_matches_torchvision_rule():
    landscape = np.zeros((34, 51, 3), np.uint8)  # DragBench 512x341 scaled by 1/10
    assert resize_shorter_side(landscape, 51).shape == (51, 76, 3)  # int(51 * 51 / 34) = 76
    portrait = np.full((77, 51, 3), 7, np.uint8)
    assert resize_shorter_side(portrait, 51) is portrait  # shorter side already 51: unchanged
    assert resize_shorter_side(portrait, 34).shape == (51, 34, 3)  # int(34 * 77 / 51) = 51


def test_random_crop_offsets_cover_the_valid_range():
    g = torch.Generator().manual_seed(0)
    off = random_crop_offsets(76, 51, 51, 2000, g)
    assert off[:, 0].min() == 0 and off[:, 0].max() == 25 and (off[:, 1] == 0).all()
    assert (random_crop_offsets(64, 64, 64, 4, g) == 0).all()  # square image: the crop is the image
    with pytest.raises(ValueError, match="larger than the image"):
        random_crop_offsets(10, 64, 64, 1, g)
    x = to_model_range(np.array([[[0, 255, 128]]], np.uint8))
    assert torch.allclose(x.flatten(), torch.tensor([-1.0, 1.0, 128 / 127.5 - 1]), atol=1e-6)


def test_crop_latent_sampler_on_a_landscape_image(backbone):
    wide = np.concatenate([_image(), _image()[:, :32]], axis=1)  # (64, 96, 3): crops slide along x
    sampler = CropLatentSampler(backbone, wide, SIZE, torch.Generator().manual_seed(0))
    z = sampler.sample(6)
    assert z.shape == (6, 4, 8, 8) and 1 < len(sampler.posteriors) <= 6
    assert all(t == 0 and 0 <= left <= 32 for t, left in sampler.posteriors)
    again = CropLatentSampler(backbone, wide, SIZE, torch.Generator().manual_seed(0)).sample(6)
    assert torch.equal(z, again)
    first = tuple(random_crop_offsets(64, 96, SIZE, 6, torch.Generator().manual_seed(0))[0].tolist())
    mean, std = sampler.posteriors[first]
    eps = (z[0] / backbone.latent_scale - mean) / std  # a posterior *sample*: eps ~ N(0, 1), not 0
    assert abs(eps.mean()) < 0.2 and 0.8 < eps.std() < 1.2


# --- training ---------------------------------------------------------------------------------------------


def test_snapshots_fresh_adapter_is_gaussian_a_zero_b(snaps):
    s0 = snaps[0]
    assert len(s0) == 2 * 4 * 32  # A and B of to_q/k/v/out.0 in each of the 32 attention modules
    a = torch.cat([v.flatten() for k, v in s0.items() if ".lora_A." in k])
    assert all(v.abs().max() == 0 for k, v in s0.items() if ".lora_B." in k)
    assert abs(a.std().item() - 1 / 16) < 0.002  # peft "gaussian" init: N(0, 1/rank²)
    assert all(v.device.type == "cpu" and v.dtype == torch.float32 for v in s0.values())


def test_snapshots_differ_and_loss_drops(backbone, snaps):
    assert set(snaps) == set(STEPS)
    b_norm = {
        s: sum(v.norm() ** 2 for k, v in sd.items() if ".lora_B." in k).sqrt().item()
        for s, sd in snaps.items()
    }
    assert b_norm[0] == 0 < b_norm[3] < b_norm[20] < b_norm[40]
    z0, noise, t, text = _eval_batch(backbone)
    scheduler = backbone.fresh_scheduler()
    losses = {}
    for step in (0, 20, 40):
        with lora_applied(backbone.unet, snaps[step]), torch.no_grad():
            losses[step] = denoising_loss(backbone, scheduler, z0, noise, t, text).item()
    # measured on CPU (1 thread): 0 -> 1.1294, 20 -> 1.1115, 40 -> 1.0795 (-4.4 %)
    assert losses[0] > losses[20] > losses[40]
    assert losses[40] < 0.97 * losses[0]


def test_training_is_deterministic_prefix_consistent_and_leaves_globals(backbone, snaps):
    before = _unet_state(backbone.unet)
    torch.manual_seed(999)  # the global RNG must play no part ...
    rng = torch.get_rng_state()
    trainer = LoraTrainer(train_size=SIZE)
    again = trainer.snapshots(backbone, _image(), PROMPT, [3])
    assert torch.equal(torch.get_rng_state(), rng)  # ... and must not move
    assert trainer.steps_taken == 3 and len(trainer.losses) == 3 and all(0 < x < 10 for x in trainer.losses)
    assert again[3].keys() == snaps[3].keys()
    assert all(torch.equal(again[3][k], snaps[3][k]) for k in snaps[3])  # 3 steps == first 3 of a 40-step run
    other_seed = lora_snapshots(backbone, _image(), PROMPT, [3], seed=7, train_size=SIZE)[3]
    assert not all(torch.equal(other_seed[k], snaps[3][k]) for k in snaps[3])
    _assert_unet_pristine(backbone.unet, before)


def test_bad_inputs_raise(backbone):
    with pytest.raises(ValueError, match="uint8"):
        lora_snapshots(backbone, _image().astype(np.float32), PROMPT, [1])
    with pytest.raises(ValueError, match="non-negative"):
        lora_snapshots(backbone, _image(), PROMPT, [-1])


# --- cache ------------------------------------------------------------------------------------------------


def test_cache_hit_trains_nothing_and_partial_hit_trains_to_largest_missing(backbone):
    cache = DictCache()
    first = LoraTrainer(batch_size=1, train_size=SIZE, cache=cache)
    a = first.snapshots(backbone, _image(), PROMPT, [0, 2])
    assert first.steps_taken == 2 and cache.calls == [("miss", 2), ("miss", 0)]

    steps_before = LORA_STATS["optimizer_steps"]
    second = LoraTrainer(batch_size=1, train_size=SIZE, cache=cache)
    b = second.snapshots(backbone, _image(), PROMPT, [2, 0])
    assert second.steps_taken == 0 and LORA_STATS["optimizer_steps"] == steps_before
    assert all(torch.equal(a[s][k], b[s][k]) for s in (0, 2) for k in a[s])

    third = LoraTrainer(batch_size=1, train_size=SIZE, cache=cache)
    c = third.snapshots(backbone, _image(), PROMPT, [0, 2, 4])
    assert third.steps_taken == 4  # trains once, to the largest missing step
    assert cache.calls[-3:] == [("miss", 4), ("hit", 2), ("hit", 0)]
    key = next(k for k in c[4] if ".lora_B." in k)
    assert len(cache.store) == 3 and not torch.equal(c[4][key], c[2][key])

    prompt_changed = LoraTrainer(batch_size=1, train_size=SIZE, cache=cache)
    prompt_changed.snapshots(backbone, _image(), "another prompt", [2])
    assert prompt_changed.steps_taken == 2  # a different input is a different key


def test_real_cache_roundtrip_trains_once(backbone, tmp_path):
    from dragbench.cache import Cache

    cache = Cache(tmp_path)
    first = LoraTrainer(batch_size=1, train_size=SIZE, cache=cache)
    a = first.snapshots(backbone, _image(), PROMPT, [1])[1]
    second = LoraTrainer(batch_size=1, train_size=SIZE, cache=Cache(tmp_path))
    b = second.snapshots(backbone, _image(), PROMPT, [1])[1]
    assert (first.steps_taken, second.steps_taken) == (1, 0)
    assert second.cache.stats == {"lora/hit": 1}
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_from_cached_training_state_is_bit_exact(backbone, tmp_path):
    from dragbench.cache import Cache

    kw = dict(batch_size=1, train_size=SIZE)
    straight = LoraTrainer(**kw).snapshots(backbone, _image(), PROMPT, [3, 5])  # no cache: from scratch
    cache = Cache(tmp_path)
    a = LoraTrainer(**kw, cache=cache)
    a.snapshots(backbone, _image(), PROMPT, [2])  # a sweep's first point: stores snapshot 2 + its state
    b = LoraTrainer(**kw, cache=cache)
    got = b.snapshots(backbone, _image(), PROMPT, [0, 3, 5])
    assert (a.steps_taken, b.steps_taken) == (2, 3)  # continued from step 2, not from 0
    assert all(torch.equal(got[s][k], straight[s][k]) for s in (3, 5) for k in straight[s])
    assert all(v.abs().max() == 0 for k, v in got[0].items() if ".lora_B." in k)
    c = LoraTrainer(**kw, cache=cache)
    c.snapshots(backbone, _image(), PROMPT, [4])  # states exist at 2 and 5: continue from 2
    assert c.steps_taken == 2


# --- applying / removing ----------------------------------------------------------------------------------


class CountingProcessor(AttnProcessor2_0):
    """A custom processor (as the mutual self-attention control installs) that counts its calls."""

    calls = 0

    def __call__(self, attn, hidden_states, *args, **kwargs):
        CountingProcessor.calls += 1
        return super().__call__(attn, hidden_states, *args, **kwargs)


def test_lora_applied_is_exact_and_fully_removed(backbone, snaps):
    unet = backbone.unet
    z0, noise, t, cond = _eval_batch(backbone, n=2)
    text = cond.encoder_hidden_states  # (2, 77, D): this test calls the UNet itself
    before = _unet_state(unet)
    processors = unet.attn_processors
    with torch.no_grad():
        base = unet(z0 + noise, t, text).sample
        with lora_applied(unet, snaps[0]):  # fresh adapter: lora_B = 0, an exact no-op
            assert torch.equal(unet(z0 + noise, t, text).sample, base)
        with lora_applied(unet, snaps[40]) as adapted:
            assert adapted is unet
            assert sum("lora_" in n for n, _ in unet.named_parameters()) == 256
            now = unet.attn_processors
            assert all(a is b for a, b in zip(processors.values(), now.values(), strict=True))
            lora_out = unet(z0 + noise, t, text).sample
            unet.set_attn_processor(CountingProcessor())
            custom_out = unet(z0 + noise, t, text).sample
            unet.set_attn_processor(dict(processors))  # diffusers pops from the dict it is given
        with lora_applied(unet, snaps[40], alpha=32):  # scaling alpha / rank doubles: the protocol §2 trap
            doubled = unet(z0 + noise, t, text).sample
        after = unet(z0 + noise, t, text).sample
    assert CountingProcessor.calls == 32  # every attention went through the custom processor ...
    assert (lora_out - base).abs().max() > 1e-4
    assert torch.allclose(custom_out, lora_out, atol=1e-5)  # ... and still saw the LoRA
    assert (doubled - lora_out).abs().max() > 1e-4
    assert torch.equal(after, base)
    _assert_unet_pristine(unet, before)
    assert all(a is b for a, b in zip(processors.values(), unet.attn_processors.values(), strict=True))


def test_lora_applied_restores_on_error_and_rejects_mismatched_weights(backbone, snaps):
    unet = backbone.unet
    before = _unet_state(unet)
    with pytest.raises(RuntimeError, match="boom"), lora_applied(unet, snaps[3]):
        raise RuntimeError("boom")
    with pytest.raises(ValueError, match="missing"), lora_applied(unet, dict(list(snaps[3].items())[1:])):
        pass
    with pytest.raises(ValueError, match="shape"), lora_applied(unet, snaps[3], rank=8):
        pass
    with lora_applied(unet, snaps[3]), pytest.raises(RuntimeError, match="already carries"):
        with lora_applied(unet, snaps[3]):
            pass
    _assert_unet_pristine(unet, before)


# --- save / load ------------------------------------------------------------------------------------------


def test_save_load_roundtrip_is_bit_exact_with_alpha(tmp_path, snaps):
    for step in (0, 20, 40):
        save_lora(snaps[step], tmp_path / f"lora_{step}.safetensors", rank=16, alpha=16)
    for step in (0, 20, 40):
        sd, rank, alpha = load_lora(tmp_path / f"lora_{step}.safetensors")
        assert (rank, alpha) == (16, 16)
        assert sd.keys() == snaps[step].keys()
        assert all(torch.equal(sd[k], snaps[step][k]) for k in sd)
    save_lora(snaps[20], tmp_path / "a32.safetensors", rank=16, alpha=32)
    assert load_lora(tmp_path / "a32.safetensors")[1:] == (16, 32)
    save_file(snaps[20], str(tmp_path / "bare.safetensors"))
    with pytest.raises(ValueError, match="lora_alpha"):
        load_lora(tmp_path / "bare.safetensors")
    with pytest.raises(FileNotFoundError):
        load_lora(tmp_path / "nope.safetensors")
