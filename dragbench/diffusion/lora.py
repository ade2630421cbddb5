"""DragDiffusion's identity-preserving LoRA training (protocol §2 "LoRA" row): train once, keep snapshots, cache.

Reproduces the official `utils/lora_utils.py` on diffusers + peft: a rank-16 peft adapter on `to_q, to_k,
to_v, to_out.0` of every attention, AdamW at a constant lr, ε-MSE on noised VAE-posterior samples of random
crops of the one image, conditioned on the sample's prompt, uniform t in [0, num_train_timesteps).
Applying and saving a LoRA live in `lora_adapter` (re-exported here).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dragbench.backbone import Backbone
from dragbench.diffusion.conditioning import ConditionedBackbone, Conditioning
from dragbench.diffusion.lora_adapter import (
    LoraStateDict,
    adapter_added,
    load_lora,
    lora_applied,
    lora_digest,
    lora_state_dict,
    save_lora,
)
from dragbench.diffusion.lora_augment import CropLatentSampler
from dragbench.diffusion.precision import StagePrecision, weights_in
from dragbench.progress import track

log = logging.getLogger(__name__)

__all__ = [
    "LORA_STATS",
    "LoraTrainer",
    "PerImageLora",
    "denoising_loss",
    "load_lora",
    "lora_applied",
    "lora_digest",
    "lora_snapshots",
    "lora_state_dict",
    "save_lora",
]

ADAMW_BETAS = (0.9, 0.999)  # protocol §2 / official lora_utils.py
ADAMW_WEIGHT_DECAY = 1e-2  # protocol §2
ADAMW_EPS = 1e-8  # protocol §2
CACHE_NAMESPACE = "lora"
RESUME_NAMESPACE = "lora_resume"  # optimiser + generator state at the end of each training run
CACHE_PRODUCERS = (__name__,)  # this trainer's source (+ the harness modules it imports) keys both namespaces

# Process-wide count of LoRA optimiser steps ("optimizer_steps") and training runs ("trainings"), so
# performance tests can assert that a repeated sweep point trained nothing.
LORA_STATS: Counter[str] = Counter()


class SnapshotCache(Protocol):
    """What the trainer needs from `dragbench.cache.Cache`."""

    def get_or_compute(
        self,
        namespace: str,
        inputs: dict,
        compute: Callable[[], dict[str, Tensor]],
        producers: tuple[str, ...] | None = None,
    ) -> dict[str, Tensor]: ...


def denoising_loss(
    model: ConditionedBackbone,
    scheduler,
    latents: Tensor,
    noise: Tensor,
    timesteps: Tensor,
    cond: Conditioning,
) -> Tensor:
    """ε-MSE of the UNet on `latents` noised to `timesteps` (the DDPM training loss).

    Args:
        model: the noise predictor (`predict_noise`), e.g. the `Backbone` whose UNet carries the adapter.
        scheduler: a diffusers scheduler with `add_noise` (its `alphas_cumprod` define q(z_t | z_0)).
        latents: scaled clean latents (B, 4, h, w).
        noise: ε (B, 4, h, w).
        timesteps: int64 (B,) in [0, num_train_timesteps).
        cond: conditioning of batch B.

    Returns:
        Scalar float32 mean squared error between predicted and true ε.
    """
    noisy = scheduler.add_noise(latents, noise, timesteps)
    pred = model.predict_noise(noisy, timesteps, cond)
    return F.mse_loss(pred.float(), noise.float(), reduction="mean")


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


def _can_resume(cache: SnapshotCache | None) -> bool:
    """Resuming needs a cache that can also be read (`get`) and written (`put`) directly."""
    return cache is not None and hasattr(cache, "get") and hasattr(cache, "put")


def _training_state(
    params: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    scaler: torch.amp.GradScaler,
) -> dict[str, Tensor]:
    """Everything needed to continue training bit-exactly: weights, AdamW moments and step, RNG state and
    (fp16 mixed precision) the GradScaler's loss scale and growth tracker.

    AdamW has no state yet when the GradScaler skipped every step so far (fp16 overflow); zeros at step 0
    are what AdamW initialises then.
    """
    state: dict[str, Tensor] = {"generator_state": generator.get_state()}
    for key, p in params.items():
        adam = optimizer.state.get(p) or {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
        state[f"weight/{key}"] = p.detach().to("cpu", copy=True)
        state[f"exp_avg/{key}"] = adam["exp_avg"].detach().to("cpu", copy=True)
        state[f"exp_avg_sq/{key}"] = adam["exp_avg_sq"].detach().to("cpu", copy=True)
    first = optimizer.state.get(next(iter(params.values())), {})
    state["adam_step"] = first.get("step", torch.tensor(0.0)).detach().cpu().float().reshape(1)
    if scaler.is_enabled():
        scaler_state = scaler.state_dict()
        state["grad_scaler"] = torch.tensor(
            [scaler_state["scale"], scaler_state["_growth_tracker"]], dtype=torch.float64
        )
    return state


def _restore_training_state(
    state: dict[str, Tensor],
    params: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    scaler: torch.amp.GradScaler,
) -> None:
    generator.set_state(state["generator_state"])
    if scaler.is_enabled():
        scale, tracker = state["grad_scaler"].tolist()
        scaler.load_state_dict({**scaler.state_dict(), "scale": scale, "_growth_tracker": int(tracker)})
    with torch.no_grad():
        for key, p in params.items():
            p.copy_(state[f"weight/{key}"])
            optimizer.state[p] = {
                "step": state["adam_step"].reshape(()).clone(),
                "exp_avg": state[f"exp_avg/{key}"].to(p.device, p.dtype),
                "exp_avg_sq": state[f"exp_avg_sq/{key}"].to(p.device, p.dtype),
            }


@dataclass
class LoraTrainer:
    """Trains the DragDiffusion LoRA once per (image, prompt, model, hyper-parameters) and keeps snapshots.

    Attributes:
        rank, alpha: adapter rank and lora_alpha (protocol §2: 16, 16).
        lr: AdamW learning rate, constant (protocol §2: 5e-4).
        batch_size: random crops per step (protocol §2: 4).
        seed: seeds the torch.Generator of crops, posterior samples, noise, timesteps and lora_A's init.
        train_size: crop side in pixels; None = the model's native resolution (UNet sample_size × VAE
            factor: 512 for SD-1.5, the official constant; 128 for the tiny model).
        cache: optional content-addressed cache (`dragbench.cache.Cache`); snapshots go to namespace "lora".
        progress: force a tqdm bar for the steps (default: dragbench.progress decides: a bar on a
            terminal, log lines when piped or inside a sweep job).
        precision: how training computes (`precision.StagePrecision`): frozen weights' dtype (a temporary
            cast copy of the backbone when it differs) and autocast (fp16 adds a GradScaler, as accelerate's
            fp16 mixed precision). None = the backbone as loaded, no autocast. LoRA weights stay float32.
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
    precision: StagePrecision | None = None
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
        With a cache that also has `get`/`put` (dragbench's does), the optimiser and generator state at the
        end of each run is cached too, and a later run continues from the latest usable one: a Fig. 7(b)
        sweep over 20, 40, …, 100 steps run in that order trains 100 steps in all, with results bit-equal
        to training each count from scratch.

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
            model=backbone.fingerprint,
            device=str(backbone.device),  # CPU and CUDA training differ in the last bits
            dtype=str(self._precision(backbone).weights),
            rank=self.rank,
            alpha=self.alpha,
            lr=self.lr,
            batch_size=self.batch_size,
            seed=self.seed,
            train_size=size,
        )
        if self._precision(backbone).autocast is not None:  # keys of runs without autocast stay as they were
            base["autocast"] = str(self._precision(backbone).autocast)
        trained: dict[int, LoraStateDict] = {}
        out: dict[int, LoraStateDict] = {}
        # One inter-process lock per (sample, model, hyper-parameters), whatever the step counts: concurrent
        # sweep jobs of one sample wait for the first training, then hit its snapshots or resume from it.
        lock = getattr(self.cache, "lock", None)
        locked = lock(CACHE_NAMESPACE, base, producers=CACHE_PRODUCERS) if lock is not None else None
        with locked or contextlib.nullcontext():
            for step in reversed(wanted):  # the first miss is the largest one: train to it, once

                def compute(step: int = step) -> LoraStateDict:
                    if step not in trained:
                        below = [s for s in wanted if s <= step]
                        trained.update(self._train(backbone, image, prompt, below, size, base))
                    return trained[step]

                out[step] = self.cache.get_or_compute(
                    CACHE_NAMESPACE, {**base, "step": step}, compute, producers=CACHE_PRODUCERS
                )
        return {s: out[s] for s in wanted}

    def _precision(self, backbone: Backbone) -> StagePrecision:
        return self.precision or StagePrecision(weights=backbone.dtype)

    def _train(
        self,
        backbone: Backbone,
        image: np.ndarray,
        prompt: str,
        snapshot_steps: list[int],
        size: int,
        base: dict | None = None,
    ) -> dict[int, LoraStateDict]:
        # official fp16: UNet, VAE and text encoder in fp16 (a temporary copy: the shared backbone stays fp32)
        with weights_in(backbone, self._precision(backbone).weights) as cast:
            return self._train_on(cast, image, prompt, snapshot_steps, size, base)

    def _train_on(
        self,
        backbone: Backbone,
        image: np.ndarray,
        prompt: str,
        snapshot_steps: list[int],
        size: int,
        base: dict | None,
    ) -> dict[int, LoraStateDict]:
        scheduler = backbone.fresh_scheduler()
        if scheduler.config.prediction_type != "epsilon":
            raise ValueError(
                f"LoRA training needs an epsilon scheduler, got {scheduler.config.prediction_type!r}"
            )
        generator = torch.Generator().manual_seed(self.seed)
        crops = CropLatentSampler(backbone, image, size, generator)
        cond = backbone.condition(prompt).expand(self.batch_size)  # the prompt for each of the B crops
        n_train_t = int(scheduler.config.num_train_timesteps)
        last = snapshot_steps[-1]
        resume = self._find_resume_state(base, snapshot_steps)
        first = resume[0] + 1 if resume else 1
        log.info(
            "LoRA: training steps %d..%d at %dpx (rank %d, lr %g)", first, last, size, self.rank, self.lr
        )
        LORA_STATS["trainings"] += 1
        self.losses = []
        unet = backbone.unet
        with adapter_added(unet, self.rank, self.alpha) as params, torch.enable_grad():
            trainable = self._init_trainable(params, generator)
            optimizer = torch.optim.AdamW(
                trainable, lr=self.lr, betas=ADAMW_BETAS, weight_decay=ADAMW_WEIGHT_DECAY, eps=ADAMW_EPS
            )
            precision = self._precision(backbone)
            scaler = precision.grad_scaler(backbone.device.type)  # a no-op unless fp16 autocast
            snaps = {0: lora_state_dict(unet)} if snapshot_steps[0] == 0 else {}
            if resume:
                _restore_training_state(resume[1], params, optimizer, generator, scaler)
                if resume[0] in snapshot_steps:
                    snaps[resume[0]] = lora_state_dict(unet)
            unet.train()
            losses: list[Tensor] = []  # on the device; one host copy after the run
            for step in self._step_range(first, last):
                batch = self._draw_batch(crops, generator, n_train_t)
                with precision.autocast_context(backbone.device.type):
                    loss = denoising_loss(backbone, scheduler, *batch, cond)
                scaler.scale(loss).backward()
                scaler.step(optimizer)  # skipped when fp16 gradients overflowed (the scale then halves)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.detach())
                self.steps_taken += 1
                LORA_STATS["optimizer_steps"] += 1
                if step in snapshot_steps:
                    snaps[step] = lora_state_dict(unet)
            self.losses = torch.stack(losses).tolist() if losses else []
            if base is not None and _can_resume(self.cache) and last > 0:
                state = _training_state(params, optimizer, generator, scaler)
                self.cache.put(RESUME_NAMESPACE, {**base, "step": last}, state, producers=CACHE_PRODUCERS)
        return snaps

    def _draw_batch(
        self, crops: CropLatentSampler, generator: torch.Generator, n_train_t: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One step's (latents, ε, t): crops and posterior samples, then noise, then uniform timesteps."""
        latents = crops.sample(self.batch_size)  # (B, 4, h, w)
        noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
        t = torch.randint(0, n_train_t, (self.batch_size,), generator=generator).to(latents.device)
        return latents, noise, t

    def _find_resume_state(self, base: dict | None, snapshot_steps: list[int]) -> tuple[int, dict] | None:
        """The latest cached training state we may continue from, as (step, tensors), or None.

        It must not lie beyond a requested snapshot that is still missing, so that every requested
        snapshot is produced by this run or already cached. Probing a missing entry costs one file lookup.
        """
        if base is None or not _can_resume(self.cache):
            return None
        target = snapshot_steps[-1]

        def cached(step: int) -> dict[str, Tensor] | None:
            return self.cache.get(CACHE_NAMESPACE, {**base, "step": step}, producers=CACHE_PRODUCERS)

        lacking = [s for s in snapshot_steps[:-1] if s > 0 and cached(s) is None]
        for step in range(min([*lacking, target]), 0, -1):
            state = self.cache.get(RESUME_NAMESPACE, {**base, "step": step}, producers=CACHE_PRODUCERS)
            if state is not None:
                log.info("LoRA: resuming from the cached state at step %d of %d", step, target)
                return step, state
        return None

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

    def _step_range(self, first: int, last: int) -> Iterator[int]:
        # dragbench.progress: a bar on a terminal, log lines when piped or in a sweep; `progress` forces a bar
        return track(range(first, last + 1), "LoRA step", unit="step", mode="bar" if self.progress else None)


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
    precision: StagePrecision | None = None,
) -> dict[int, LoraStateDict]:
    """Functional form of `LoraTrainer(...).snapshots(...)`; optimiser steps are counted in `LORA_STATS`."""
    trainer = LoraTrainer(rank, alpha, lr, batch_size, seed, train_size, cache, progress, precision)
    return trainer.snapshots(backbone, image, prompt, steps)


@dataclass(frozen=True)
class PerImageLora:
    """A method's per-image LoRA: its settings, training (or fetching) the one snapshot it uses, applying it.

    Attributes:
        steps: optimiser steps (0 = no LoRA: `train` returns None and `applied` changes nothing).
        rank: adapter rank; alpha = rank (scaling 1), as every method here sets it.
        lr: AdamW learning rate.
        batch_size: crops per step.
        seed: the trainer's generator seed.
        plan_steps: the other step counts of the sweep this job belongs to (cost only, results are
            bit-identical): with a cache, the first job of a sample trains once to the largest count and
            stores every snapshot. Ignored without a cache.
    """

    steps: int
    rank: int = 16
    lr: float = 5e-4
    batch_size: int = 4
    seed: int = 42
    plan_steps: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"LoRA steps must be >= 0 (0 = no LoRA), got {self.steps}; set method.lora_steps")
        # a sweep's step list as written in the config: order, repeats and 0 ("no LoRA") carry no meaning here
        object.__setattr__(self, "plan_steps", tuple(sorted({int(s) for s in self.plan_steps if s > 0})))

    def train(
        self,
        backbone: Backbone,
        image: np.ndarray,
        prompt: str,
        cache: SnapshotCache | None = None,
        precision: StagePrecision | None = None,
    ) -> LoraStateDict | None:
        """The LoRA state after `steps` steps on (image, prompt), trained or from the cache; None if steps = 0."""
        if self.steps == 0:
            return None
        wanted = sorted({self.steps, *(self.plan_steps if cache is not None else ())})
        trainer = LoraTrainer(
            self.rank, self.rank, self.lr, self.batch_size, self.seed, cache=cache, precision=precision
        )
        return trainer.snapshots(backbone, image, prompt, wanted)[self.steps]

    def applied(self, unet: torch.nn.Module, state: LoraStateDict | None) -> contextlib.AbstractContextManager:
        """`lora_applied` with this rank (alpha = rank) inside the block; nothing when `state` is None."""
        if state is None:
            return contextlib.nullcontext()
        return lora_applied(unet, state, rank=self.rank, alpha=self.rank)
