"""Shared DDIM inversion / denoising (protocol §2): timesteps, the inversion formula, reconstruction."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from diffusers import DDIMScheduler

from dragbench.backbone import DDIM_CONFIG
from dragbench.diffusion.ddim import ddim_denoise, ddim_invert, denoising_timesteps, drag_timestep

CONFIG = DDIMScheduler(**DDIM_CONFIG).config


class ConstantEps(torch.nn.Module):
    """A 'UNet' predicting the same noise everywhere: DDIM inversion is then exactly invertible."""

    def __init__(self, eps: torch.Tensor) -> None:
        super().__init__()
        self.eps = eps
        self.calls: list[int] = []

    def forward(self, latents, t, encoder_hidden_states=None):
        self.calls.append(int(t))
        return SimpleNamespace(sample=self.eps.expand_as(latents))

    def predict_noise(self, latents, t, cond):  # the ConditionedBackbone interface ddim_* call
        return self.forward(latents, t).sample


def test_timesteps_and_drag_timestep():
    timesteps = denoising_timesteps(CONFIG, 50)
    assert timesteps[0] == 981 and timesteps[-1] == 1 and len(timesteps) == 50
    assert drag_timestep(CONFIG, 50, 35) == 681  # protocol §2
    assert drag_timestep(CONFIG, 50, 50) == 981
    with pytest.raises(ValueError, match="inversion_step"):
        drag_timestep(CONFIG, 50, 0)


def test_inversion_walks_1_21_and_uses_the_official_alphas():
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 1, 4, 3, 5, generator=gen)
    unet = ConstantEps(eps)
    z = ddim_invert(unet, x0, None, CONFIG, 50, 2)
    assert unet.calls == [1, 21]  # UNet evaluated at t itself
    alphas = DDIMScheduler.from_config(CONFIG).alphas_cumprod
    x = x0
    for cur, nxt in ((alphas[0], alphas[1]), (alphas[1], alphas[21])):  # t=1: "current" = alpha of timestep 0
        pred_x0 = (x - (1 - cur) ** 0.5 * eps) / cur**0.5
        x = nxt**0.5 * pred_x0 + (1 - nxt) ** 0.5 * eps
    torch.testing.assert_close(z, x, rtol=0, atol=1e-6)


def test_inversion_step_zero_is_identity():
    x0 = torch.randn(1, 4, 3, 5)
    unet = ConstantEps(torch.zeros(1, 4, 3, 5))
    assert torch.equal(ddim_invert(unet, x0, None, CONFIG, 50, 0), x0) and unet.calls == []


def test_invert_then_denoise_is_exact_when_the_noise_prediction_is_constant():
    gen = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 1, 4, 6, 6, generator=gen)
    unet = ConstantEps(eps)
    zt = ddim_invert(unet, x0, None, CONFIG, 50, 35)
    steps = []
    back = ddim_denoise(unet, zt, None, CONFIG, 50, 35, step_callback=lambda i, t: steps.append((i, t)))
    assert steps[0] == (0, 681) and steps[-1] == (34, 1) and len(steps) == 35
    torch.testing.assert_close(back, x0, rtol=0, atol=1e-5)


def test_invert_then_denoise_reconstructs_on_the_tiny_model(tiny_backbone):
    """Measured on the tiny random UNet (64x64 image, 8x8 latent): 1 step -> max error 6e-4 (mean 1.5e-4,
    4% of the distance travelled); 5 steps -> mean error 0.014 = 20% of the mean |z_t - z_0| = 0.067
    (DDIM inversion is approximate: eps is evaluated on x_{t-1} instead of x_t, and random weights make eps
    vary fast)."""
    bb = tiny_backbone
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 64, 64, generator=gen) * 2 - 1
    with torch.no_grad():
        z0 = bb.vae.encode(image).latent_dist.mean * bb.latent_scale
    cond = bb.condition("a photo of a dog")
    one = ddim_denoise(bb, ddim_invert(bb, z0, cond, CONFIG, 50, 1), cond, CONFIG, 50, 1)
    assert (one - z0).abs().max() < 2e-3
    zt = ddim_invert(bb, z0, cond, CONFIG, 50, 5)
    five = ddim_denoise(bb, zt, cond, CONFIG, 50, 5)
    assert (five - z0).abs().mean() < 0.3 * (zt - z0).abs().mean()
