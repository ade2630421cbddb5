"""DragDiffusion method: config contract, end-to-end edits on the tiny backbone, shared-state hygiene."""

from __future__ import annotations

import inspect
from dataclasses import replace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from shared_data import REAL_SAMPLES

from dragbench import InvalidSampleError, load_sample
from dragbench.backbone import MissingWeightsError, load_pretrained
from dragbench.cache import Cache
from dragbench.diffusion.features import UNetFeatureHooks
from dragbench.sample import DragSample
from methods.base import EditResult
from methods.dragdiffusion.method import DragDiffusion

REAL = REAL_SAMPLES
FAST = dict(lora_steps=0, max_iters=4)  # keep the tiny runs short
INFO_KEYS = {
    "time/lora",
    "time/inversion",
    "time/drag",
    "time/denoise",
    "iterations",
    "optimizer_steps",
    "reached_targets",
    "losses",
    "peak_mem_mb",
    "weights",
}


def _resized(sample: DragSample, width: int, height: int | None = None) -> DragSample:
    """The sample scaled to `width` (and `height`, default keeping the aspect ratio), via PIL."""
    height = height or round(sample.height * width / sample.width)
    image = np.asarray(Image.fromarray(sample.image).resize((width, height), Image.LANCZOS))
    mask = (
        np.asarray(Image.fromarray(sample.mask.astype(np.uint8)).resize((width, height), Image.NEAREST)) > 0
    )
    scale = np.array([width / sample.width, height / sample.height])
    return replace(
        sample,
        image=image,
        mask=mask,
        handles=np.round(sample.handles * scale),
        targets=np.round(sample.targets * scale),
    )


@pytest.fixture(scope="module")
def real_sample() -> DragSample:
    path = REAL / "animals" / "animal_1"
    if not path.is_dir():
        pytest.skip(f"real DragBench samples not found at {REAL}")
    return _resized(load_sample(path), 128)


# ---------------------------------------------------------------- config contract
def test_yaml_keys_and_defaults_match_the_signature(cfg_offline):
    node = OmegaConf.to_container(cfg_offline.method, resolve=False)
    assert node.pop("_target_") == "methods.dragdiffusion.method.DragDiffusion"
    params = inspect.signature(DragDiffusion.__init__).parameters
    assert set(node) == set(params) - {"self"}
    resolved = OmegaConf.to_container(cfg_offline.method, resolve=True)
    for key in set(node) - {"backbone", "cache"}:
        assert resolved[key] == params[key].default, key
    assert resolved["seed"] == 42 and resolved["inversion_step"] == 35 and resolved["unet_block"] == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(guidance_scale=7.5), "guidance_scale"),
        (dict(unet_block=5), "unet_block"),
        (dict(unet_block=0), "unet_block"),
        (dict(inversion_step=51), "inversion_step"),
        (dict(precision="fp16"), "precision"),
    ],
)
def test_bad_knobs_fail_at_construction(tiny_backbone, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DragDiffusion(tiny_backbone, **kwargs)


def test_missing_real_weights_fail_fast_with_one_line():
    with pytest.raises(MissingWeightsError) as err:
        load_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5", local_files_only=True)
    assert "\n" not in str(err.value) and "stable-diffusion-v1-5" in str(err.value)


# ---------------------------------------------------------------- feature hooks (shared with DIFT)
def test_unet_feature_hooks_record_block_outputs_with_grad_and_clean_up(tiny_backbone):
    unet = tiny_backbone.unet
    z = torch.randn(1, 4, 16, 16, requires_grad=True)
    emb = tiny_backbone.encode_prompt("a dog")
    with UNetFeatureHooks(unet, [1, 2]) as hooks:
        unet(z, 681, encoder_hidden_states=emb)
        assert hooks.features[1].shape == (1, 64, 8, 8)  # up_blocks[1]: 64 ch at half latent size
        assert hooks.features[2].shape == (1, 32, 16, 16)  # up_blocks[2]: latent size (protocol §2 block 3)
        hooks.features[2].sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert all(len(block._forward_hooks) == 0 for block in unet.up_blocks)
    with pytest.raises(ValueError, match="up_blocks"):
        UNetFeatureHooks(unet, [4])


# ---------------------------------------------------------------- end to end on the tiny backbone
def _unet_fingerprint(unet) -> tuple:
    return (
        dict(unet.attn_processors),
        float(sum(p.double().sum() for p in unet.parameters())),
        any(p.requires_grad for p in unet.parameters()),
        unet.training,
    )


def test_edit_real_sample_end_to_end_is_deterministic_and_leaves_the_backbone_alone(
    tiny_backbone, real_sample
):
    before = _unet_fingerprint(tiny_backbone.unet)
    method = DragDiffusion(tiny_backbone, **FAST)
    first = method.edit(real_sample)
    second = method.edit(real_sample)
    assert isinstance(first, EditResult) and first.status == "ok"
    assert first.image.shape == real_sample.image.shape and first.image.dtype == np.uint8
    assert INFO_KEYS <= set(first.info)
    assert first.info["weights"] == "random" and first.info["drag_timestep"] == 681
    assert (
        1 <= first.info["iterations"] <= 4 and len(first.info["losses"]) == first.info["optimizer_steps"]
    )
    assert np.isfinite(first.info["losses"]).all() and first.info["peak_mem_mb"] > 0
    assert first.handles.shape == real_sample.handles.shape
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.handles, second.handles)
    assert first.info["losses"] == second.info["losses"]
    after = _unet_fingerprint(tiny_backbone.unet)
    assert all(after[0][k] is before[0][k] for k in before[0]) and after[1:] == before[1:]


def test_non_multiple_of_8_and_non_square_sizes_work(tiny_backbone, real_sample):
    sample = _resized(real_sample, 100, 68)  # neither side a multiple of 8
    result = DragDiffusion(tiny_backbone, lora_steps=0, max_iters=2).edit(sample)
    assert result.image.shape == (68, 100, 3)
    assert result.info["latent_hw"] == [8, 12]  # the VAE's stride-2 convs: 68 -> 34 -> 17 -> 8, as official
    assert result.info["supervision_grid_hw"] == [34, 50]
    assert ((result.handles >= 0) & (result.handles <= [100, 68])).all()


def test_inverted_latent_is_cached(tiny_backbone, real_sample, tmp_path):
    cache = Cache(tmp_path)
    method = DragDiffusion(tiny_backbone, cache=cache, lora_steps=0, max_iters=1)
    first = method.edit(real_sample)
    second = method.edit(real_sample)
    assert cache.stats["inversion/miss"] == 1 and cache.stats["inversion/hit"] == 1
    np.testing.assert_array_equal(first.image, second.image)


def test_grid_handles_map_back_to_pixels(tiny_backbone, real_sample):
    result = DragDiffusion(tiny_backbone, lora_steps=0, max_iters=1).edit(real_sample)
    grid_h, grid_w = result.info["supervision_grid_hw"]
    rc = np.array(result.info["handles_final_rc"])
    expected = np.stack([rc[:, 1] * real_sample.width / grid_w, rc[:, 0] * real_sample.height / grid_h], 1)
    np.testing.assert_allclose(result.handles, expected)


def test_invalid_sample_is_refused(tiny_backbone, real_sample):
    bad = replace(real_sample, targets=real_sample.targets[:0])
    with pytest.raises(InvalidSampleError):
        DragDiffusion(tiny_backbone, **FAST).edit(bad)


def test_lora_path_trains_applies_and_removes_the_adapter(tiny_backbone, real_sample):
    unet = tiny_backbone.unet
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    processors = dict(unet.attn_processors)
    with_lora = DragDiffusion(tiny_backbone, lora_steps=2, max_iters=2).edit(real_sample)
    without = DragDiffusion(tiny_backbone, lora_steps=0, max_iters=2).edit(real_sample)
    assert with_lora.info["time/lora"] > 0 and with_lora.image.shape == real_sample.image.shape
    assert with_lora.info["losses"][0] != without.info["losses"][0]  # the adapter changed the UNet in use
    after = unet.state_dict()
    assert set(after) == set(state) and all(torch.equal(after[k], state[k]) for k in state)
    assert all(unet.attn_processors[k] is processors[k] for k in processors)
