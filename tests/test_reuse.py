"""Reuse across sweep points (DESIGN.md "Reuse"): a repeated point trains no LoRA and inverts nothing.

Counts come from `LORA_STATS` (optimiser steps) and `benchmarks.model_calls.ModelCalls` (UNet / VAE calls).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.model_calls import ModelCalls, backbone_modules
from dragbench.cache import Cache
from dragbench.diffusion.lora import LORA_STATS, lora_snapshots
from methods.dragdiffusion.method import DragDiffusion

KNOBS = dict(n_inference_steps=10, inversion_step=7, max_iters=3, lora_steps=2, lora_batch_size=2)


def _edit(backbone, sample, cache_root, **knobs):
    method = DragDiffusion(backbone, cache=Cache(cache_root), **{**KNOBS, **knobs})
    steps_before = LORA_STATS["optimizer_steps"]
    with ModelCalls(backbone_modules(backbone)) as calls:
        result = method.edit(sample)
    return result, calls, LORA_STATS["optimizer_steps"] - steps_before, method.cache.stats


def test_second_identical_point_trains_and_inverts_nothing(tiny_backbone, tiny_samples, tmp_path):
    sample = tiny_samples[0]
    first, calls1, steps1, stats1 = _edit(tiny_backbone, sample, tmp_path)
    second, calls2, steps2, stats2 = _edit(tiny_backbone, sample, tmp_path)  # a new job, same knobs
    iters = second.info["iterations"]
    assert steps1 == KNOBS["lora_steps"] and steps2 == 0
    assert stats1 == {"lora/miss": 1, "inversion/miss": 1}
    assert stats2 == {"lora/hit": 1, "inversion/hit": 1}
    # second: only the drag loop (1 reference + `iters` forwards) and the denoising (inversion_step calls)
    assert calls2.calls["unet"] == 1 + iters + KNOBS["inversion_step"]
    assert calls2.backward_calls["unet"] == iters - int(second.info["reached_targets"])
    assert calls2.calls["vae_encoder"] == 0  # no image encoding: no inversion, no LoRA crops
    # first: additionally the LoRA steps (forward + backward) and the inversion's UNet calls
    assert calls1.calls["unet"] - calls2.calls["unet"] == KNOBS["lora_steps"] + KNOBS["inversion_step"]
    assert calls1.backward_calls["unet"] - calls2.backward_calls["unet"] == KNOBS["lora_steps"]
    np.testing.assert_array_equal(first.image, second.image)  # reuse changes nothing


def test_inversion_cache_key_separates_points(tiny_backbone, tiny_samples, tmp_path):
    """A different t (or no LoRA) is a different inverted latent: a miss, never a wrong hit."""
    sample = tiny_samples[0]
    _edit(tiny_backbone, sample, tmp_path, lora_steps=0)
    _, calls, steps, stats = _edit(tiny_backbone, sample, tmp_path, lora_steps=0, inversion_step=5)
    assert steps == 0 and stats == {"inversion/miss": 1}
    assert calls.calls["vae_encoder"] == 1  # the image was encoded again for the new inversion
    assert not (tmp_path / "lora").exists()  # lora_steps=0: no LoRA entries at all


@pytest.mark.parametrize("wanted", [[1], [2]])
def test_planned_lora_serves_every_step_count(tiny_backbone, tiny_samples, tmp_path, wanted):
    """The sweep planner trains once to the largest count; each point then trains nothing, bit-exactly."""
    sample = tiny_samples[0]
    args = dict(rank=4, alpha=4, batch_size=1, seed=42)
    before = LORA_STATS["optimizer_steps"]
    lora_snapshots(tiny_backbone, sample.image, sample.prompt, [1, 2], cache=Cache(tmp_path), **args)
    assert LORA_STATS["optimizer_steps"] - before == 2  # 2 steps in all, not 1 + 2
    before = LORA_STATS["optimizer_steps"]
    cached = lora_snapshots(tiny_backbone, sample.image, sample.prompt, wanted, cache=Cache(tmp_path), **args)
    assert LORA_STATS["optimizer_steps"] == before
    fresh = lora_snapshots(tiny_backbone, sample.image, sample.prompt, wanted, cache=None, **args)
    state, ref = cached[wanted[0]], fresh[wanted[0]]
    assert state.keys() == ref.keys()
    assert all(torch.equal(state[k], ref[k]) for k in state)
