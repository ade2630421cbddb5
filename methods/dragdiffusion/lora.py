"""DragDiffusion's identity-preserving LoRA (SPEC §2 "LoRA" row): train once, snapshot, apply, save/load.

Reproduces the official `utils/lora_utils.py` on diffusers + peft: a rank-16 peft adapter on `to_q, to_k,
to_v, to_out.0` of every attention, AdamW at a constant lr, ε-MSE on noised VAE-posterior samples of random
crops of the one image, conditioned on the sample's prompt, uniform t in [0, num_train_timesteps).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from peft import LoraConfig
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from dragbench.backbone import Backbone
from methods.dragdiffusion.lora_augment import random_crop_offsets, resize_shorter_side, to_model_range

log = logging.getLogger(__name__)

LORA_TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]  # SPEC §2: every attention's projections
ADAPTER_NAME = "dragdiffusion_lora"
ADAMW_BETAS = (0.9, 0.999)  # SPEC §2 / official lora_utils.py
ADAMW_WEIGHT_DECAY = 1e-2  # SPEC §2
ADAMW_EPS = 1e-8  # SPEC §2
CACHE_NAMESPACE = "lora"
LORA_FILE_FORMAT = "dragbench-lora-v1"  # safetensors metadata "format"

# Process-wide count of LoRA optimiser steps ("optimizer_steps") and training runs ("trainings"), so
# performance tests can assert that a repeated sweep point trained nothing.
LORA_STATS: Counter[str] = Counter()

LoraStateDict = dict[str, Tensor]


class SnapshotCache(Protocol):
    """What the trainer needs from `dragbench.cache.Cache`."""

    def get_or_compute(
        self, namespace: str, inputs: dict, compute: Callable[[], dict[str, Tensor]]
    ) -> dict[str, Tensor]: ...


# ---------------------------------------------------------------------------------------------------------
# Adding / removing the peft adapter without leaving a trace on the shared UNet
# ---------------------------------------------------------------------------------------------------------


def lora_config(rank: int, alpha: int) -> LoraConfig:
    """The peft config of SPEC §2 (gaussian init: lora_A ~ N(0, 1/rank²), lora_B = 0, so a fresh adapter is a
    no-op; scaling = alpha / rank)."""
    return LoraConfig(
        r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=LORA_TARGET_MODULES
    )


def _lora_parameters(unet: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Our adapter's parameters, keyed like peft's `get_peft_model_state_dict` (adapter name removed)."""
    marker = f".{ADAPTER_NAME}."
    return {
        name.replace(marker, "."): p
        for name, p in unet.named_parameters()
        if "lora_" in name and marker in name
    }


@contextmanager
def _adapter_added(
    unet: UNet2DConditionModel, rank: int, alpha: int
) -> Iterator[dict[str, torch.nn.Parameter]]:
    """Add our peft adapter for the duration of the block, then unwrap it and restore every UNet flag.

    peft's init draws from the global RNG; it runs inside `fork_rng` so callers' seeded streams don't move.
    Restored on exit: the original Linear modules (same objects), `training`, each parameter's
    `requires_grad`, and diffusers' `_hf_peft_config_loaded` flag.

    Raises:
        RuntimeError: the UNet already carries peft adapters.
    """
    if getattr(unet, "_hf_peft_config_loaded", False) or hasattr(unet, "peft_config"):
        raise RuntimeError(
            "the UNet already carries peft adapters; remove them before adding the DragDiffusion LoRA"
        )
    was_training = unet.training
    requires_grad = {name: p.requires_grad for name, p in unet.named_parameters()}
    flag_was_set = "_hf_peft_config_loaded" in unet.__dict__
    cuda = [unet.device.index or 0] if unet.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            unet.add_adapter(lora_config(rank, alpha), adapter_name=ADAPTER_NAME)
        yield _lora_parameters(unet)
    finally:
        if hasattr(unet, "peft_config"):
            unet.unload_lora()  # replaces each peft layer by its original base layer
        if not flag_was_set:
            unet.__dict__.pop("_hf_peft_config_loaded", None)
        unet.train(was_training)
        for name, p in unet.named_parameters():
            p.requires_grad_(requires_grad[name])


def lora_state_dict(unet: UNet2DConditionModel) -> LoraStateDict:
    """CPU float32 copies of the applied DragDiffusion adapter's weights (peft key format)."""
    return {
        k: p.detach().to("cpu", torch.float32, copy=True) for k, p in sorted(_lora_parameters(unet).items())
    }


def _load_exact(params: dict[str, torch.nn.Parameter], state_dict: LoraStateDict) -> None:
    missing, unexpected = sorted(set(params) - set(state_dict)), sorted(set(state_dict) - set(params))
    if missing or unexpected:
        raise ValueError(
            f"LoRA state dict does not fit the UNet: {len(missing)} missing (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}); was it trained on another model or rank?"
        )
    with torch.no_grad():
        for key, p in params.items():
            if p.shape != state_dict[key].shape:
                raise ValueError(
                    f"LoRA tensor {key}: shape {tuple(state_dict[key].shape)} != {tuple(p.shape)}"
                )
            p.copy_(state_dict[key])


@contextmanager
def lora_applied(
    unet: UNet2DConditionModel, state_dict: LoraStateDict, rank: int = 16, alpha: int = 16
) -> Iterator[UNet2DConditionModel]:
    """Apply a LoRA to the shared UNet inside the block; on exit the UNet is exactly as before.

    peft wraps the Linear layers themselves, so any attention processor (including custom ones installed
    with `set_attn_processor`) runs through the adapted projections.

    Args:
        unet: the backbone's UNet (left bit-identical, with no peft module, after the block).
        state_dict: weights from `lora_snapshots` / `load_lora` (peft keys).
        rank, alpha: the adapter's rank and lora_alpha (scaling = alpha / rank).

    Yields:
        The same UNet, adapted, with every parameter frozen.

    Raises:
        ValueError: the state dict's keys or shapes don't match this UNet and rank.
    """
    with _adapter_added(unet, rank, alpha) as params:
        _load_exact(params, state_dict)
        for p in params.values():
            p.requires_grad_(False)
        yield unet


# ---------------------------------------------------------------------------------------------------------
# Save / load (SPEC §2 trap: without lora_alpha in the file, reloads differ)
# ---------------------------------------------------------------------------------------------------------


def save_lora(state_dict: LoraStateDict, path: str | Path, rank: int, alpha: int) -> None:
    """Write a LoRA to safetensors atomically, with rank and lora_alpha in the metadata."""
    path = Path(path)
    metadata = {
        "format": LORA_FILE_FORMAT,
        "rank": str(rank),
        "lora_alpha": str(alpha),
        "target_modules": json.dumps(LORA_TARGET_MODULES),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_lora(path: str | Path) -> tuple[LoraStateDict, int, int]:
    """Read a LoRA written by `save_lora`.

    Returns:
        (state_dict, rank, alpha).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file has no rank / lora_alpha metadata (the scaling alpha/rank would be guessed).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state_dict = {k: f.get_tensor(k) for k in f.keys()}
    if "rank" not in meta or "lora_alpha" not in meta:
        raise ValueError(
            f"{path}: no rank/lora_alpha metadata; re-save it with methods.dragdiffusion.lora.save_lora"
        )
    return state_dict, int(meta["rank"]), int(meta["lora_alpha"])


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------


def denoising_loss(
    unet: UNet2DConditionModel,
    scheduler,
    latents: Tensor,
    noise: Tensor,
    timesteps: Tensor,
    text_embeddings: Tensor,
) -> Tensor:
    """ε-MSE of the UNet on `latents` noised to `timesteps` (the DDPM training loss).

    Args:
        unet: epsilon-predicting UNet.
        scheduler: a diffusers scheduler with `add_noise` (its `alphas_cumprod` define q(z_t | z_0)).
        latents: scaled clean latents (B, 4, h, w).
        noise: ε (B, 4, h, w).
        timesteps: int64 (B,) in [0, num_train_timesteps).
        text_embeddings: (B, 77, D).

    Returns:
        Scalar float32 mean squared error between predicted and true ε.
    """
    noisy = scheduler.add_noise(latents, noise, timesteps)
    pred = unet(noisy, timesteps, text_embeddings).sample
    return F.mse_loss(pred.float(), noise.float(), reduction="mean")


class _CropLatents:
    """Draws scaled VAE-posterior samples of random crops; the posterior of each crop offset is encoded once.

    Exact: the encoder is deterministic, and a posterior sample is mean + std · ε with ε from the generator,
    as `DiagonalGaussianDistribution.sample` draws it.
    """

    def __init__(self, backbone: Backbone, image: np.ndarray, size: int, generator: torch.Generator):
        self.backbone, self.size, self.generator = backbone, size, generator
        self.pixels = to_model_range(resize_shorter_side(image, size))  # (3, H', W') in [-1, 1]
        self.posteriors: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}

    @torch.no_grad()
    def _encode(self, offsets: list[tuple[int, int]]) -> None:
        bb, s = self.backbone, self.size
        crops = torch.stack([self.pixels[:, t : t + s, l : l + s] for t, l in offsets])  # (n, 3, s, s)
        dist = bb.vae.encode(crops.to(bb.device, bb.dtype)).latent_dist
        for i, offset in enumerate(offsets):
            self.posteriors[offset] = (dist.mean[i], dist.std[i])

    def sample(self, n: int) -> Tensor:
        """(n, 4, s/8, s/8) scaled latents of n independent random crops, in the backbone's dtype."""
        _, h, w = self.pixels.shape
        offsets = [tuple(o) for o in random_crop_offsets(h, w, self.size, n, self.generator).tolist()]
        new = list(dict.fromkeys(o for o in offsets if o not in self.posteriors))
        if new:
            self._encode(new)
        mean = torch.stack([self.posteriors[o][0] for o in offsets])  # (n, 4, h, w)
        std = torch.stack([self.posteriors[o][1] for o in offsets])
        eps = torch.randn(mean.shape, generator=self.generator).to(mean.device, mean.dtype)
        return (mean + std * eps) * self.backbone.latent_scale


def _image_sha256(image: np.ndarray) -> str:
    digest = hashlib.sha256(f"{image.dtype}{image.shape}".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def _check_inputs(image: np.ndarray, steps: list[int]) -> list[int]:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = getattr(image, "dtype", type(image).__name__), getattr(image, "shape", None)
        raise ValueError(f"image must be a uint8 (H, W, 3) array, got {got}")
    if not steps or any(int(s) != s or s < 0 for s in steps):
        raise ValueError(f"steps must be a non-empty list of non-negative ints, got {steps!r}")
    return sorted({int(s) for s in steps})


@dataclass
class LoraTrainer:
    """Trains the DragDiffusion LoRA once per (image, prompt, model, hyper-parameters) and keeps snapshots.

    Attributes:
        rank, alpha: adapter rank and lora_alpha (SPEC §2: 16, 16).
        lr: AdamW learning rate, constant (SPEC §2: 5e-4).
        batch_size: random crops per step (SPEC §2: 4).
        seed: seeds the torch.Generator of crops, posterior samples, noise, timesteps and lora_A's init.
        train_size: crop side in pixels; None = the model's native resolution (UNet sample_size × VAE
            factor: 512 for SD-1.5, the official constant; 128 for the tiny model).
        cache: optional content-addressed cache (`dragbench.cache.Cache`); snapshots go to namespace "lora".
        progress: show a tqdm bar (off by default: no bars inside sweep jobs).
        steps_taken: optimiser steps this trainer has run (0 when every snapshot came from the cache).
        losses: per-step training ε-MSE of the last run this trainer trained (empty if none).
    """

    rank: int = 16
    alpha: int = 16
    lr: float = 5e-4
    batch_size: int = 4
    seed: int = 42
    train_size: int | None = None
    cache: SnapshotCache | None = None
    progress: bool = False
    steps_taken: int = field(default=0, init=False)
    losses: list[float] = field(default_factory=list, init=False)

    def resolved_size(self, backbone: Backbone) -> int:
        """Crop side in pixels for this backbone."""
        return self.train_size or int(backbone.unet.config.sample_size) * backbone.vae_scale_factor

    def snapshots(
        self, backbone: Backbone, image: np.ndarray, prompt: str, steps: list[int]
    ) -> dict[int, LoraStateDict]:
        """LoRA weights after each requested number of optimiser steps (0 = the fresh, no-op adapter).

        Trains at most once, to the largest step that is not cached, and stores every requested snapshot.

        Args:
            backbone: the shared SD backbone (left unmodified).
            image: uint8 (H, W, 3), the sample's image.
            prompt: the sample's prompt.
            steps: step counts to return.

        Returns:
            {step: state dict of CPU float32 tensors (peft keys)} for each distinct requested step.

        Raises:
            ValueError: bad image or steps; a non-epsilon scheduler.
        """
        wanted = _check_inputs(image, steps)
        size = self.resolved_size(backbone)
        if self.cache is None:
            return self._train(backbone, image, prompt, wanted, size)
        base = dict(
            image_sha256=_image_sha256(image),
            prompt=prompt,
            backbone_name=backbone.name,
            backbone_weights=backbone.weights,
            dtype=str(backbone.dtype),
            rank=self.rank,
            alpha=self.alpha,
            lr=self.lr,
            batch_size=self.batch_size,
            seed=self.seed,
            train_size=size,
        )
        trained: dict[int, LoraStateDict] = {}
        out: dict[int, LoraStateDict] = {}
        for step in reversed(wanted):  # the first miss is the largest one: train to it, once

            def compute(step: int = step) -> LoraStateDict:
                if step not in trained:
                    trained.update(
                        self._train(backbone, image, prompt, [s for s in wanted if s <= step], size)
                    )
                return trained[step]

            out[step] = self.cache.get_or_compute(CACHE_NAMESPACE, {**base, "step": step}, compute)
        return {s: out[s] for s in wanted}

    def _train(
        self, backbone: Backbone, image: np.ndarray, prompt: str, snapshot_steps: list[int], size: int
    ) -> dict[int, LoraStateDict]:
        scheduler = backbone.fresh_scheduler()
        if scheduler.config.prediction_type != "epsilon":
            raise ValueError(
                f"LoRA training needs an epsilon scheduler, got {scheduler.config.prediction_type!r}"
            )
        generator = torch.Generator().manual_seed(self.seed)
        crops = _CropLatents(backbone, image, size, generator)
        text = backbone.encode_prompt(prompt).expand(self.batch_size, -1, -1)  # (B, 77, D)
        n_train_t = int(scheduler.config.num_train_timesteps)
        last = snapshot_steps[-1]
        log.info("LoRA: training %d steps at %dpx (rank %d, lr %g)", last, size, self.rank, self.lr)
        LORA_STATS["trainings"] += 1
        self.losses = []
        unet = backbone.unet
        with _adapter_added(unet, self.rank, self.alpha) as params, torch.enable_grad():
            trainable = self._init_trainable(params, generator)
            optimizer = torch.optim.AdamW(
                trainable, lr=self.lr, betas=ADAMW_BETAS, weight_decay=ADAMW_WEIGHT_DECAY, eps=ADAMW_EPS
            )
            unet.train()
            snaps = {0: lora_state_dict(unet)} if snapshot_steps[0] == 0 else {}
            for step in self._step_range(last):
                latents = crops.sample(self.batch_size)
                noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
                timesteps = torch.randint(0, n_train_t, (self.batch_size,), generator=generator).to(
                    latents.device
                )
                loss = denoising_loss(unet, scheduler, latents, noise, timesteps, text)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                self.losses.append(loss.item())
                self.steps_taken += 1
                LORA_STATS["optimizer_steps"] += 1
                if step in snapshot_steps:
                    snaps[step] = lora_state_dict(unet)
        return snaps

    def _init_trainable(self, params: dict[str, torch.nn.Parameter], generator: torch.Generator) -> list:
        """peft's "gaussian" init redrawn from our generator: A ~ N(0, 1/r²), B = 0; kept in fp32."""
        trainable = []
        with torch.no_grad():
            for key in sorted(params):
                p = params[key]
                p.data = p.data.float()  # fp32 master weights even on an fp16 backbone (peft casts inputs)
                if ".lora_A." in key:
                    p.copy_(torch.randn(p.shape, generator=generator) / self.rank)
                else:
                    p.zero_()
                p.requires_grad_(True)
                trainable.append(p)
        return trainable

    def _step_range(self, last: int) -> Iterator[int]:
        steps = range(1, last + 1)
        if self.progress:
            from tqdm.auto import tqdm

            return iter(tqdm(steps, desc="training LoRA"))
        return iter(steps)


def lora_snapshots(
    backbone: Backbone,
    image: np.ndarray,
    prompt: str,
    steps: list[int],
    rank: int = 16,
    alpha: int = 16,
    lr: float = 5e-4,
    batch_size: int = 4,
    seed: int = 42,
    cache: SnapshotCache | None = None,
    progress: bool = False,
    train_size: int | None = None,
) -> dict[int, LoraStateDict]:
    """Functional form of `LoraTrainer(...).snapshots(...)`; optimiser steps are counted in `LORA_STATS`."""
    trainer = LoraTrainer(rank, alpha, lr, batch_size, seed, train_size, cache, progress)
    return trainer.snapshots(backbone, image, prompt, steps)
