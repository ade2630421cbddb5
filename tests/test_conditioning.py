"""The backbone's conditioning interface: SD-1.x calls are unchanged, and an SDXL-style backbone (two text
encoders, pooled text embeddings and size time ids as added conditioning) runs DragDiffusion unmodified."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from dragbench.backbone import TINY_TEXT_CONFIG, TINY_UNET_CONFIG, Backbone, build_tiny_components
from dragbench.diffusion.conditioning import Conditioning
from dragbench.diffusion.ddim import ddim_invert
from methods.dragdiffusion.method import DragDiffusion

TIME_EMBED_DIM = 8  # per time id; SDXL has 6 time ids (original size, crop top-left, target size)


def test_sd_backbone_predicts_noise_exactly_as_the_hand_written_unet_call(tiny_backbone):
    bb = tiny_backbone
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = bb.condition(["a dog", "a cat"])
    assert cond.added_cond_kwargs is None and cond.batch_size == 2
    with torch.no_grad():
        direct = bb.unet(z, 681, encoder_hidden_states=bb.encode_prompt(["a dog", "a cat"])).sample
        torch.testing.assert_close(bb.predict_noise(z, 681, cond), direct, rtol=0, atol=0)
    one = bb.condition("a dog").expand(3)
    assert one.batch_size == 3 and torch.equal(one.encoder_hidden_states[2], cond.encoder_hidden_states[0])


@dataclass(eq=False)
class SDXLStyleBackbone(Backbone):
    """Tiny SDXL-shaped conditioning: two text encoders (states concatenated, the second's pooled output as
    `text_embeds`) and `time_ids` = (orig h, orig w, crop top, crop left, target h, target w)."""

    text_encoder_2: CLIPTextModel | None = None
    image_size: int = 64

    @torch.no_grad()
    def condition(self, prompt: str | list[str]) -> Conditioning:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        first = self.text_encoder(ids)
        second = self.text_encoder_2(ids)
        states = torch.cat([first.last_hidden_state, second.last_hidden_state], dim=-1)  # (B, 77, 64)
        s = float(self.image_size)
        time_ids = torch.tensor([[s, s, 0.0, 0.0, s, s]]).expand(len(prompts), 6)
        return Conditioning(states, {"text_embeds": second.pooler_output, "time_ids": time_ids})


def _sdxl_style_backbone() -> SDXLStyleBackbone:
    parts = build_tiny_components(seed=0)
    width = TINY_TEXT_CONFIG["hidden_size"]
    torch.manual_seed(1)
    parts["text_encoder_2"] = CLIPTextModel(CLIPTextConfig(**TINY_TEXT_CONFIG)).eval().requires_grad_(False)
    torch.manual_seed(0)
    parts["unet"] = UNet2DConditionModel(**{
        **TINY_UNET_CONFIG,
        "cross_attention_dim": 2 * width,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": TIME_EMBED_DIM,
        "projection_class_embeddings_input_dim": width + 6 * TIME_EMBED_DIM,
    })
    for key in ("unet", "vae", "text_encoder"):
        parts[key].eval().requires_grad_(False)
    return SDXLStyleBackbone(**parts, device=torch.device("cpu"), dtype=torch.float32, weights="random",
                             name="tiny-sdxl-style")


def test_an_sdxl_style_backbone_plugs_into_ddim_and_dragdiffusion_unchanged(tiny_samples):
    bb = _sdxl_style_backbone()
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = bb.condition("a dog")
    doubled = {**cond.added_cond_kwargs, "time_ids": cond.added_cond_kwargs["time_ids"] * 2}
    other_size = Conditioning(cond.encoder_hidden_states, doubled)
    with torch.no_grad():
        eps, eps_other = bb.predict_noise(z, 681, cond), bb.predict_noise(z, 681, other_size)
    assert (eps - eps_other).abs().max() > 1e-4  # the added conditioning reaches the UNet
    assert ddim_invert(bb, z, cond, bb.scheduler.config, 10, 3).shape == z.shape
    method = DragDiffusion(bb, n_inference_steps=10, inversion_step=7, max_iters=2, lora_steps=1,
                           lora_batch_size=1, precision="fp32")
    result = method.edit(tiny_samples[0])
    assert result.status == "ok" and result.image.shape == tiny_samples[0].image.shape
    assert result.info["iterations"] >= 1 and np.isfinite(result.handles).all()
