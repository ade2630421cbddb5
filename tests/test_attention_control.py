"""Attention control: layer selection by execution order, key/value edits, mutual self-attention."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from dragbench.diffusion.attention import (
    ControlledAttnProcessor,
    MutualSelfAttention,
    SelfAttentionControl,
    classic_attention,
    self_attention_layers,
)

START_LAYER = 10  # protocol §2


@pytest.fixture(scope="module")
def unet(tiny_backbone):
    return tiny_backbone.unet


def test_self_attention_layers_follow_execution_order(unet):
    layers = self_attention_layers(unet)
    assert len(layers) == 16
    assert layers[6].startswith("mid_block.")  # down 0-5, mid 6, up 7-15
    assert all(name.startswith("down_blocks.") for name in layers[:6])
    assert [name.split(".")[1] for name in layers[START_LAYER:]] == ["2", "2", "2", "3", "3", "3"]
    assert all(name.startswith("up_blocks.") for name in layers[7:])
    # diffusers' attn_processors lists down, up, mid: a different order, so it must not be used for indexing
    dict_order = [k.removesuffix(".processor") for k in unet.attn_processors if ".attn1." in k]
    assert dict_order != layers and sorted(dict_order) == sorted(layers)


def test_only_layers_from_start_layer_are_controlled_and_originals_come_back(unet):
    before = dict(unet.attn_processors)
    with MutualSelfAttention(unet, start_layer=START_LAYER):
        installed = unet.attn_processors
        mutual = sorted(k.removesuffix(".processor") for k, p in installed.items()
                        if isinstance(p, ControlledAttnProcessor))
        assert mutual == sorted(self_attention_layers(unet)[START_LAYER:])
        others = [p for p in installed.values() if not isinstance(p, ControlledAttnProcessor)]
        assert len(others) == 32 - 6 and all(isinstance(p, AttnProcessor2_0) for p in others)
    after = unet.attn_processors
    assert all(after[k] is before[k] for k in before)


def test_classic_attention_context_restores_processors(unet):
    before = dict(unet.attn_processors)
    with classic_attention(unet):
        assert all(type(p).__name__ == "AttnProcessor" for p in unet.attn_processors.values())
    assert all(unet.attn_processors[k] is before[k] for k in before)


def _unet_out(unet, latents: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return unet(latents, 681, encoder_hidden_states=emb).sample


def test_identical_branches_give_the_default_output(unet, tiny_backbone):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, 8, 8, generator=gen)
    emb = tiny_backbone.encode_prompt(["a dog", "a dog"])
    reference = _unet_out(unet, z.repeat(2, 1, 1, 1), emb)
    with MutualSelfAttention(unet, start_layer=START_LAYER):
        controlled = _unet_out(unet, z.repeat(2, 1, 1, 1), emb)
    torch.testing.assert_close(controlled, reference, rtol=0, atol=1e-5)


def test_reference_branch_steers_the_edited_branch(unet, tiny_backbone):
    gen = torch.Generator().manual_seed(1)
    z_ref, z_edit, z_other = torch.randn(3, 1, 4, 8, 8, generator=gen)
    emb = tiny_backbone.encode_prompt(["a dog", "a dog"])
    free = _unet_out(unet, torch.cat([z_ref, z_edit]), emb)
    with MutualSelfAttention(unet, start_layer=START_LAYER) as control:
        out_a = _unet_out(unet, torch.cat([z_ref, z_edit]), emb)
        out_b = _unet_out(unet, torch.cat([z_other, z_edit]), emb)
        control.start_step = 5  # before start_step the layers attend normally
        control.on_step(4)
        out_early = _unet_out(unet, torch.cat([z_other, z_edit]), emb)
    torch.testing.assert_close(out_a[0], free[0], rtol=0, atol=1e-5)  # the reference item is unaffected
    assert (out_a[1] - out_b[1]).abs().max() > 1e-3  # changing the reference changes the edited item
    assert (out_a[1] - free[1]).abs().max() > 1e-3
    torch.testing.assert_close(out_early[1], free[1], rtol=0, atol=1e-5)


def test_effect_is_confined_to_controlled_modules(unet):
    """Call every attention module directly on [h_ref, h_edit] vs [h_ref', h_edit]."""
    controlled = set(self_attention_layers(unet)[START_LAYER:])
    modules = {name: m for name, m in unet.named_modules() if isinstance(m, Attention)}
    changed = set()
    gen = torch.Generator().manual_seed(2)
    with MutualSelfAttention(unet, start_layer=START_LAYER), torch.no_grad():
        for name, attn in modules.items():
            dim = attn.to_q.in_features
            h_ref, h_other, h_edit = torch.randn(3, 1, 6, dim, generator=gen)
            ctx = None
            if attn.is_cross_attention:
                ctx = torch.randn(2, 5, attn.to_k.in_features, generator=gen)
            out_a = attn(torch.cat([h_ref, h_edit]), encoder_hidden_states=ctx)
            out_b = attn(torch.cat([h_other, h_edit]), encoder_hidden_states=ctx)
            if (out_a[1] - out_b[1]).abs().max() > 1e-6:
                changed.add(name)
    assert changed == controlled


def test_start_layer_is_checked_against_this_unets_layer_count(unet):
    assert len(MutualSelfAttention(unet, start_layer=16).controlled) == 0  # 16 = none of SD-1.5's 16
    with pytest.raises(ValueError, match="16 self-attention layers.*0..16"):
        MutualSelfAttention(unet, start_layer=17)


def test_key_value_injection_slot_sees_each_controlled_layer_and_step(unet, tiny_backbone):
    """A KeyValueEdit gets (layer, step, keys, values) on controlled layers only; its return is used."""
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(2, 4, 8, 8, generator=gen)
    cond = tiny_backbone.condition(["a dog", "a dog"])
    seen: list[tuple[str, int, tuple[int, ...]]] = []

    def record(layer, step, key, value):
        seen.append((layer, step, tuple(key.shape)))
        return key, value

    with torch.no_grad():
        free = tiny_backbone.predict_noise(z, 681, cond)
        with SelfAttentionControl(unet, start_layer=START_LAYER, start_step=1, kv_edit=record) as control:
            control.on_step(0)  # before start_step: no call
            early = tiny_backbone.predict_noise(z, 681, cond)
            control.on_step(1)
            same = tiny_backbone.predict_noise(z, 681, cond)
        zeros = SelfAttentionControl(unet, START_LAYER, kv_edit=lambda n, s, k, v: (k * 0, v * 0))
        with zeros:
            injected = tiny_backbone.predict_noise(z, 681, cond)
    assert [name for name, _, _ in seen] == self_attention_layers(unet)[START_LAYER:]
    assert {step for _, step, _ in seen} == {1} and all(shape[0] == 2 for _, _, shape in seen)
    torch.testing.assert_close(early, free, rtol=0, atol=1e-5)
    torch.testing.assert_close(same, free, rtol=0, atol=1e-5)  # identity edit = unchanged output
    assert (injected - free).abs().max() > 1e-3  # injected keys/values are what the layers use
