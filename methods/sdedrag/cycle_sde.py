"""The Cycle-SDE of SDE-Drag (Nie et al., ICLR 2024, Eq. 6-8; official `cycle_sde.py`, ML-GSAI/SDE-Drag 881364a).

A stochastic forward pass x_s -> x_{s+Δ} draws fresh Gaussian noise; the backward DDPM-style SDE step
x_t -> x_{t-Δ} then uses, instead of new noise, the noise w̄ that the recorded forward pair implies. Fed the
unchanged latent, the backward step returns the recorded x_s exactly (up to float rounding): the inversion
is exact, and only what the edit changed is resampled. Pure tensor maths; loops live in `method.py`.
"""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor


def sde_timesteps(num_train_timesteps: int, steps: int) -> list[int]:
    """The descending grid SDE-Drag walks: diffusers' DPMSolverMultistepScheduler.set_timesteps(steps) with
    SD-1.5's scheduler file (no `timestep_spacing`, so the solver's default "linspace"), as the official
    code builds it: round(linspace(0, T-1, steps+1)) reversed, the final 0 dropped.

    For T = 1000, steps = 200: 999, 994, ..., 505, 500, 495, ..., 10, 5 (gaps of 5, one gap of 4 between
    504 and 500 from the rounding). The SDE steps themselves always move by T // steps (`step_delta`).
    """
    grid = np.linspace(0, num_train_timesteps - 1, steps + 1).round()[::-1][:-1]  # descending, 0 dropped
    return [int(t) for t in grid]


def step_delta(num_train_timesteps: int, steps: int) -> int:
    """DDPM timesteps one SDE step spans (5 for 1000 / 200), the official `num_train_timesteps // steps`."""
    return num_train_timesteps // steps


def scale_schedule(begin: float, end: float, n: int, length: int, kind: str) -> float:
    """A guidance or LoRA scale at position n of `length` (SDE-Drag's `scale_schedule`, paper §4.3).

    "linear": begin + (end - begin)·n/length; "cos": the weight of `end` is (1 - cos(πn/length))/2.
    The official loop uses n = 1..N for N steps with length = N - 1, so the noisiest step slightly
    overshoots `end` (CFG 3.017 for N = 120); that is reproduced, not corrected.
    """
    if kind == "linear":
        return begin + (end - begin) * n / length
    if kind == "cos":
        factor = (1 - math.cos(n * math.pi / length)) / 2
        return (1 - factor) * begin + factor * end
    raise ValueError(f"scale schedule kind must be 'linear' or 'cos', got {kind!r}")


def forward_step(x: Tensor, alpha_bar: Tensor, alpha_bar_next: Tensor, noise: Tensor) -> Tensor:
    """One stochastic forward step q(x_{t+Δ} | x_t): sqrt(ᾱ'/ᾱ)·x + sqrt(1 - ᾱ'/ᾱ)·noise.

    Args:
        x: (B, 4, h, w) latent at the noise level ᾱ = `alpha_bar`.
        alpha_bar, alpha_bar_next: 0-dim cumulative alphas of t and t + Δ.
        noise: standard normal, like x.
    """
    ratio = alpha_bar_next / alpha_bar
    return ratio**0.5 * x + (1 - ratio) ** 0.5 * noise


def backward_step(
    x: Tensor,
    eps: Tensor,
    recorded_before: Tensor,
    recorded_after: Tensor,
    recorded_eps: Tensor,
    alpha_bar: Tensor,
    alpha_bar_prev: Tensor,
) -> Tensor:
    """One backward SDE step x_t -> x_{t-Δ} (eta 1) with the noise w̄ the recorded forward pair implies.

    w̄ solves recorded_before = DDPM-step(recorded_after, recorded_eps) + σ·w̄ (paper Eq. 7-8), so with
    x = recorded_after and eps = recorded_eps the step returns recorded_before.

    Args:
        x: (B, 4, h, w) current latent at t.
        eps: the (guided) noise prediction at x.
        recorded_before, recorded_after: the forward pass's latents at t - Δ and t.
        recorded_eps: the (guided) noise prediction at `recorded_after`.
        alpha_bar, alpha_bar_prev: 0-dim cumulative alphas of t and t - Δ.

    Returns:
        (B, 4, h, w) latent at t - Δ.
    """
    # σ_t of DDPM ancestral sampling (DDIM with eta 1), the official `sigma_t`
    sigma = ((1 - alpha_bar_prev) / (1 - alpha_bar)) ** 0.5 * (1 - alpha_bar / alpha_bar_prev) ** 0.5
    direction = (1 - alpha_bar_prev - sigma**2) ** 0.5
    recorded_x0 = (recorded_after - (1 - alpha_bar) ** 0.5 * recorded_eps) / alpha_bar**0.5
    w_bar = (recorded_before - alpha_bar_prev**0.5 * recorded_x0 - direction * recorded_eps) / sigma
    x0 = (x - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar**0.5
    return alpha_bar_prev**0.5 * x0 + direction * eps + sigma * w_bar


def guided_noise(eps_uncond: Tensor, eps_text: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance: eps_u + scale·(eps_c - eps_u)."""
    return eps_uncond + scale * (eps_text - eps_uncond)


__all__ = [
    "backward_step",
    "forward_step",
    "guided_noise",
    "scale_schedule",
    "sde_timesteps",
    "step_delta",
]
