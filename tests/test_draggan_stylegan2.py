"""StyleGAN2 of the DragGAN baseline: official parameter names/shapes, FIR maths, outputs (protocol §5)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from methods.draggan.checkpoint import load_generator
from methods.draggan.stylegan2 import (
    Generator,
    build_generator,
    build_tiny_generator,
    conv2d_up,
    setup_filter,
    upfirdn2d,
    upsample2d,
)

OFFICIAL = Path(__file__).parent / "data" / "stylegan2_official"  # NVIDIA's code's numbers (README there)
Z_SEED = 1234  # z = torch.randn(shape, generator=torch.Generator().manual_seed(Z_SEED)), as recorded
CLAMP_TRIGGER = 300.0  # b16.conv1.bias[:4] of the "clamp" variant: lrelu * sqrt(2) -> 424 > conv_clamp 256


def _layer_names(prefix: str, in_ch: int, out_ch: int, w_dim: int, res: int) -> dict[str, tuple]:
    return {
        f"{prefix}.weight": (out_ch, in_ch, 3, 3),
        f"{prefix}.noise_strength": (),
        f"{prefix}.bias": (out_ch,),
        f"{prefix}.resample_filter": (4, 4),
        f"{prefix}.noise_const": (res, res),
        f"{prefix}.affine.weight": (in_ch, w_dim),
        f"{prefix}.affine.bias": (in_ch,),
    }


def test_state_dict_names_and_shapes_follow_official_g_ema() -> None:
    # Hand-written from stylegan2-ada-pytorch networks.py for w_dim 32, channel_base 2048, channel_max 32:
    # channels(res) = min(2048 // res, 32) -> b8: 32 -> 32, b64: 32 -> 32, b128: 32 -> 16.
    g = build_tiny_generator(resolution=128, z_dim=32, w_dim=32, channel_base=2048, channel_max=32)
    sd = {k: tuple(v.shape) for k, v in g.state_dict().items()}
    expected_b8 = {
        "synthesis.b8.resample_filter": (4, 4),
        **_layer_names("synthesis.b8.conv0", 32, 32, 32, 8),
        **_layer_names("synthesis.b8.conv1", 32, 32, 32, 8),
        "synthesis.b8.torgb.weight": (3, 32, 1, 1),
        "synthesis.b8.torgb.bias": (3,),
        "synthesis.b8.torgb.affine.weight": (32, 32),
        "synthesis.b8.torgb.affine.bias": (32,),
    }
    assert {k: v for k, v in sd.items() if k.startswith("synthesis.b8.")} == expected_b8
    assert sd["synthesis.b4.const"] == (32, 4, 4)
    assert "synthesis.b4.conv0.weight" not in sd  # the 4x4 block starts from the constant
    assert sd["synthesis.b128.conv0.weight"] == (16, 32, 3, 3)
    assert sd["mapping.fc0.weight"] == (32, 32) and sd["mapping.fc1.bias"] == (32,)
    assert sd["mapping.w_avg"] == (32,)
    assert sum(k.startswith("mapping.fc") and k.endswith("weight") for k in sd) == 2
    assert g.num_ws == 12  # 1 + 2 * 5 convs + the last ToRGB


def test_full_size_ffhq512_config_matches_known_official_shapes() -> None:
    # FFHQ-512 (stylegan2 config): z = w = 512, channel_base 32768, channel_max 512, 8 mapping layers.
    with torch.device("meta"):
        g = Generator(512, 0, 512, 512, 3, {"num_layers": 8}, {"channel_base": 32768, "channel_max": 512})
    sd = {k: tuple(v.shape) for k, v in g.state_dict().items()}
    assert g.num_ws == 16
    assert sd["synthesis.b512.conv1.weight"] == (64, 64, 3, 3)  # 32768 // 512
    assert sd["synthesis.b256.conv0.weight"] == (128, 256, 3, 3)
    assert sd["synthesis.b4.const"] == (512, 4, 4)
    assert sd["mapping.fc7.weight"] == (512, 512)
    assert sd["synthesis.b512.torgb.affine.weight"] == (64, 512)
    # 8 fc x (weight, bias) + w_avg; b4: filter, const, conv1 (7), torgb (4); b8..b512: filter, 2 x 7, 4.
    assert len(sd) == 17 + 13 + 7 * 19


def test_fir_upsampling_known_answers() -> None:
    f = setup_filter()
    assert torch.allclose(f.sum(), torch.tensor(1.0)) and f.shape == (4, 4)
    ones = torch.ones(1, 1, 8, 8)
    up = upsample2d(ones, f)
    assert up.shape == (1, 1, 16, 16)
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.ones(1, 1, 12, 12))  # gain 4 keeps a constant constant
    # An impulse at input pixel 1 spreads as [1,3,3,1]/4 per axis, centred on output pixels 2 and 3.
    x = torch.zeros(1, 1, 4, 4)
    x[..., 1, 1] = 1.0
    v = torch.tensor([0, 0.25, 0.75, 0.75, 0.25, 0, 0, 0])
    assert torch.allclose(upsample2d(x, f)[0, 0], torch.outer(v, v))


def test_transposed_up_conv_equals_upsample_then_convolve() -> None:
    # conv2d_resample's fast path (transposed conv + FIR) == the generic path (FIR upsample, then true conv).
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 6, generator=gen)
    w = torch.randn(5, 3, 3, 3, generator=gen)
    f = setup_filter()
    generic = F.conv2d(upfirdn2d(x, f, up=2, pad=(3, 2, 3, 2), gain=4), w.flip([2, 3]))
    fast = conv2d_up(x, w, f)
    assert fast.shape == (2, 5, 12, 12)
    assert torch.allclose(fast, generic, atol=1e-5)


def test_output_shapes_finite_and_seeded() -> None:
    g = build_tiny_generator(resolution=64, channel_base=1024, channel_max=16, seed=3)
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    img, feats = g(z)
    assert img.shape == (2, 3, 64, 64) and torch.isfinite(img).all()
    assert [tuple(f.shape[1:]) for f in feats] == [
        (16, 4, 4),
        (16, 8, 8),
        (16, 16, 16),
        (16, 32, 32),
        (16, 64, 64),
    ]
    again = build_tiny_generator(resolution=64, channel_base=1024, channel_max=16, seed=3)
    assert torch.equal(again(z)[0], img)  # same seed -> same weights
    assert not torch.equal(
        build_tiny_generator(resolution=64, channel_base=1024, channel_max=16, seed=4)(z)[0], img
    )
    ws = g.mapping(z)
    assert ws.shape == (2, g.num_ws, 32) and torch.equal(ws[:, 0], ws[:, -1])  # W broadcast to W+
    trunc = g.mapping(z, truncation_psi=0.0)
    assert torch.allclose(trunc, g.mapping.w_avg.expand_as(trunc))  # psi = 0 -> w_avg


@pytest.fixture(scope="module")
def official() -> tuple[Generator, dict[str, torch.Tensor]]:
    """NVIDIA's seeded random 64-px G_ema (ada `paper512` code path, small widths) and its own outputs."""
    loaded = load_generator(OFFICIAL / "tiny64_G_ema.safetensors")
    expected = load_file(OFFICIAL / "tiny64_expected.safetensors")
    z = expected["z"]
    assert torch.equal(z, torch.randn(z.shape, generator=torch.Generator().manual_seed(Z_SEED)))
    return loaded.generator, expected


def test_images_and_features_match_nvidias_generator_on_its_weights(official) -> None:
    g, expected = official
    z = expected["z"]
    ws = g.mapping(z)
    img, feats = g(z, noise_mode="const")
    img_psi, _ = g.synthesis(g.mapping(z, truncation_psi=0.7), noise_mode="const")
    # measured: bit-identical on the recording CPU, 7.2e-7 (|ws| <= 3.2) on an AVX-512 AMD EPYC (float order)
    assert (ws - expected["natural/ws"]).abs().max() <= 1e-5
    assert (img - expected["natural/img"]).abs().max() <= 1e-4  # measured 5.0e-6 (|img| <= 7.5)
    assert (img_psi - expected["natural/img_psi07"]).abs().max() <= 1e-4  # measured 5.5e-6
    for f in feats:  # every block's output feature map (what DragGAN supervises and tracks on)
        ref = expected[f"natural/feat_b{f.shape[-1]}"]
        assert (f[:1] - ref).abs().max() <= 1e-4  # measured <= 4.8e-6


def test_conv_clamp_bounds_the_activated_output_at_conv_clamp_as_nvidias_code(official) -> None:
    # Official SynthesisLayer clamps bias + lrelu * sqrt(2) at +-conv_clamp (act_clamp = conv_clamp * gain=1).
    g, expected = official
    g = copy.deepcopy(g)
    g.synthesis.b16.conv1.bias.data[:4] = CLAMP_TRIGGER
    torgb_max = []
    hook = g.synthesis.b64.torgb.register_forward_hook(lambda m, i, o: torgb_max.append(o.abs().max()))
    img, feats = g(expected["z"], noise_mode="const")
    hook.remove()
    assert feats[2][:, :4].abs().max() == 256  # b16 output: the conv clamp fired
    assert torgb_max == [256]  # and the last ToRGB's clamp (conv_clamp, gain 1) too
    ref = expected["clamp/img"]
    assert ref.abs().max() > 300  # big values: compare relative to the image's scale
    assert (img - ref).abs().max() <= 5e-6 * ref.abs().max()  # measured 3.1e-4 = 7.8e-7 x 390
    for layer in g.synthesis.noise_layers():  # the pre-fix rule conv_clamp * sqrt(2) is far off
        layer.conv_clamp *= math.sqrt(2)
    assert (g(expected["z"], noise_mode="const")[0] - ref).abs().max() > 100  # measured 150.5


def test_init_kwargs_we_cannot_honour_are_refused_by_name() -> None:
    base = {"z_dim": 8, "c_dim": 0, "w_dim": 8, "img_resolution": 8, "img_channels": 3}
    with pytest.raises(ValueError, match=r"resample_filter \[1, 2, 1\] is not supported"):
        build_generator({**base, "resample_filter": [1, 2, 1]})
    with pytest.raises(ValueError, match=r"mapping_kwargs\.mystery"):
        build_generator({**base, "mapping_kwargs": {"mystery": 1}})
    g = build_generator({**base, "use_noise": False, "channel_base": 64, "channel_max": 8})
    assert not any("noise" in k for k in g.state_dict())  # official: no noise buffers without use_noise
    assert g.synthesis.b8.conv1.conv_clamp == 256  # flat layout = stylegan3 repo: its class default
