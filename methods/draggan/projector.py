"""GAN inversion for DragGAN on real images (protocol §5): a W / W+ optimisation projector in the style of
stylegan2-ada-pytorch's projector.py (w_avg start, w-noise ramp, lr ramp, noise regularisation), with an
LPIPS+MSE or MSE-only loss, and optional PTI-style pivotal tuning of a copy of the generator.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from dragbench.progress import track
from dragbench.weights import ALEXNET_URL, VGG16_URL, MissingWeightsError, fetch_url_file
from methods.draggan.stylegan2 import Generator

LPIPS_TRUNK_URLS = {"alex": ALEXNET_URL, "vgg": VGG16_URL}  # torchvision IMAGENET1K_V1 checkpoints
LPIPS_TRUNK_FILES = {  # torchvision trunk weights lpips needs (downloaded to $TORCH_HOME/hub/checkpoints)
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
}
LPIPS_MAX_SIZE = 256  # the StyleGAN projector compares perceptual features at <= 256 px
INVERSION_LOSSES = ("lpips", "mse")

LossFn = Callable[[Tensor, Tensor], Tensor]


class ReconstructionLoss(torch.nn.Module):
    """`lpips_weight * LPIPS + mse_weight * MSE` between images in [-1, 1] (or MSE only).

    Args:
        kind: "lpips" or "mse".
        lpips_net: "alex" or "vgg" (only for kind="lpips").
        mse_weight: weight of the MSE term.
        lpips_weight: weight of the LPIPS term.

    Raises:
        MissingWeightsError: kind="lpips" and the torchvision trunk is not on disk (no silent random trunk).
    """

    def __init__(
        self, kind: str, lpips_net: str = "alex", mse_weight: float = 1.0, lpips_weight: float = 1.0
    ) -> None:
        super().__init__()
        if kind not in INVERSION_LOSSES:
            raise ValueError(f"inversion_loss must be one of {INVERSION_LOSSES}, got {kind!r}")
        self.kind, self.mse_weight, self.lpips_weight = kind, mse_weight, lpips_weight
        self.lpips = _load_lpips(lpips_net) if kind == "lpips" else None

    def perceptual(self, img: Tensor, target: Tensor) -> Tensor | None:
        """LPIPS distance (scalar) or None for kind='mse'."""
        if self.lpips is None:
            return None
        if img.shape[-1] > LPIPS_MAX_SIZE:
            img = F.interpolate(img, size=(LPIPS_MAX_SIZE, LPIPS_MAX_SIZE), mode="area")  # (B, 3, 256, 256)
            target = F.interpolate(target, size=(LPIPS_MAX_SIZE, LPIPS_MAX_SIZE), mode="area")
        return self.lpips(img, target).mean()

    def forward(self, img: Tensor, target: Tensor) -> Tensor:
        loss = self.mse_weight * F.mse_loss(img, target)
        p = self.perceptual(img, target)
        return loss if p is None else loss + self.lpips_weight * p


def _load_lpips(net: str) -> torch.nn.Module:
    if net not in LPIPS_TRUNK_FILES:
        raise ValueError(f"lpips_net must be one of {sorted(LPIPS_TRUNK_FILES)}, got {net!r}")
    trunk = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_TRUNK_FILES[net]
    try:  # the harness's one download policy (dragbench.weights.downloads_allowed)
        fetch_url_file(f"LPIPS({net}) trunk", trunk, LPIPS_TRUNK_URLS[net])
    except MissingWeightsError as err:
        raise MissingWeightsError(f"{err} (or method.inversion_loss=mse: MSE-only reconstruction)") from None
    import lpips

    return lpips.LPIPS(net=net, pretrained=True, verbose=False).eval().requires_grad_(False)


@dataclass
class Projection:
    """Result of `project`: W+ latents, the noise maps used, and the loss per step."""

    ws: Tensor  # (1, num_ws, w_dim)
    noises: list[Tensor]  # per synthesis layer, (r, r)
    losses: list[float] = field(default_factory=list)


def w_statistics(g: Generator, n_samples: int, seed: int) -> tuple[Tensor, float]:
    """Mean W (1, 1, w_dim) and scalar std of `n_samples` mapped z's (official projector)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(n_samples, g.z_dim, generator=gen).to(g.mapping.w_avg.device)
    with torch.no_grad():
        w = g.mapping(z)[:, :1, :]  # (N, 1, w_dim)
    w_avg = w.mean(dim=0, keepdim=True)  # (1, 1, w_dim)
    w_std = float(((w - w_avg).square().sum() / n_samples).sqrt())
    return w_avg, w_std


def noise_regularization(noises: list[Tensor]) -> Tensor:
    """Penalise spatial autocorrelation of each noise map at each octave down to 8 px (official projector)."""
    reg = noises[0].new_zeros(())
    for n in noises:
        x = n[None, None]  # (1, 1, r, r)
        while True:
            reg = reg + (x * torch.roll(x, shifts=1, dims=3)).mean().square()
            reg = reg + (x * torch.roll(x, shifts=1, dims=2)).mean().square()
            if x.shape[2] <= 8:
                break
            x = F.avg_pool2d(x, kernel_size=2)
    return reg


def lr_schedule(t: float, rampdown: float, rampup: float) -> float:
    """Cosine ramp-down over the last `rampdown` fraction and linear ramp-up over the first `rampup`."""
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return ramp * min(1.0, t / rampup)


def project(
    g: Generator,
    target: Tensor,
    loss_fn: LossFn,
    steps: int,
    lr: float,
    space: str = "w+",
    optimize_noise: bool = True,
    noise_weight: float = 1e5,
    w_avg_samples: int = 10000,
    initial_noise_factor: float = 0.05,
    noise_ramp: float = 0.75,
    lr_rampdown: float = 0.25,
    lr_rampup: float = 0.05,
    seed: int = 0,
) -> Projection:
    """Optimise a W (broadcast) or W+ latent so that `g` reproduces `target`.

    Args:
        g: generator (not modified).
        target: (1, 3, R, R) image in [-1, 1], R = g.img_resolution.
        loss_fn: reconstruction loss (img, target) -> scalar.
        steps, lr: Adam steps and peak learning rate (betas 0.9, 0.999).
        space: "w" (one latent shared by all layers) or "w+" (one per layer).
        optimize_noise: also optimise the per-layer noise maps, with `noise_weight` x autocorrelation penalty.
        w_avg_samples: z samples for the starting point and the w-noise scale.
        initial_noise_factor, noise_ramp: std of Gaussian noise added to w early on (x w_std), ramped to 0.
        lr_rampdown, lr_rampup: lr schedule fractions.
        seed: seeds z sampling, initial noise maps and w-noise.

    Returns:
        Projection with ws (1, num_ws, w_dim) and the noise maps to use at synthesis.
    """
    if space not in ("w", "w+"):
        raise ValueError(f"inversion_space must be 'w' or 'w+', got {space!r}")
    device = target.device
    w_avg, w_std = w_statistics(g, w_avg_samples, seed)
    gen = torch.Generator(device="cpu").manual_seed(seed + 1)
    repeat = 1 if space == "w" else g.num_ws
    w_opt = w_avg.repeat(1, repeat, 1).clone().to(device).requires_grad_(True)  # (1, 1|num_ws, w_dim)
    noises = [
        torch.randn(*layer.noise_shape, generator=gen).to(device)
        for layer in g.synthesis.noise_layers()
    ]
    params = [w_opt] + ([n.requires_grad_(True) for n in noises] if optimize_noise else [])
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))
    losses = []
    for step in track(range(steps), "GAN projection step", unit="step"):
        t = step / steps
        for group in opt.param_groups:
            group["lr"] = lr * lr_schedule(t, lr_rampdown, lr_rampup)
        w_noise_scale = w_std * initial_noise_factor * max(0.0, 1.0 - t / noise_ramp) ** 2
        w_noise = torch.randn(w_opt.shape, generator=gen).to(device) * w_noise_scale
        ws = (w_opt + w_noise).expand(1, g.num_ws, -1) if space == "w" else w_opt + w_noise
        img, _ = g.synthesis(ws, noises=noises)
        rec = loss_fn(img, target)
        loss = rec + noise_weight * noise_regularization(noises) if optimize_noise else rec
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(rec.detach()))
        if optimize_noise:
            with torch.no_grad():
                for n in noises:
                    n.sub_(n.mean()).mul_(n.square().mean().rsqrt())
    ws = w_opt.detach().expand(1, g.num_ws, -1).clone()  # (1, num_ws, w_dim)
    return Projection(ws=ws, noises=[n.detach() for n in noises], losses=losses)


def pivotal_tuning(
    g: Generator, projection: Projection, target: Tensor, loss_fn: LossFn, steps: int, lr: float
) -> tuple[Generator, list[float]]:
    """PTI (Roich et al. 2022) without locality regularisation: tune a copy of `g`'s weights at the pivot.

    Returns:
        (tuned copy of the generator, eval mode, no grad; loss per step). `g` itself is untouched.
    """
    tuned = copy.deepcopy(g).train(False).requires_grad_(True)
    opt = torch.optim.Adam(tuned.parameters(), lr=lr)
    losses = []
    for _ in track(range(steps), "PTI step", unit="step"):
        img, _ = tuned.synthesis(projection.ws, noises=projection.noises)
        loss = loss_fn(img, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return tuned.requires_grad_(False), losses
