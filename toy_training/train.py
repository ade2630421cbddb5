"""Train the toy-world model in one command: VAE, latent scale, then UNet + text encoder (ε-prediction).

    python -m toy_training.train --device cuda --out OUT/toy --ckpt /tmp/toy-ckpt --seed 0 \
        --vae-minutes 2 --unet-minutes 4.5 --batch 256

Writes a flat folder (unet/vae/text_encoder .safetensors, toy_train.json, train_log.jsonl) that
`python -m toy_training.assemble` turns into the diffusers pipeline layout. Resumable from --ckpt.
Training data are random scenes rendered on the training device (dragbench.toy.scenes), never stored.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from tqdm import tqdm
from transformers import CLIPTextConfig, CLIPTextModel

from dragbench.backbone import DDIM_CONFIG
from dragbench.tokenizer_offline import build_offline_tokenizer
from dragbench.toy.model import IMAGE_SIZE, TOY_TEXT_CONFIG, TOY_UNET_CONFIG, TOY_VAE_CONFIG
from dragbench.toy.scenes import batch_captions, random_scenes, render

log = logging.getLogger(__name__)

OBJECT_WEIGHT = 9.0  # VAE loss weight added on object pixels: without it the VAE learns no colour (probe)
KL_WEIGHT = 1e-4  # weight of the per-element KL term of the VAE (keeps latents near a unit Gaussian)
MIN_LR_FRACTION = 0.05  # cosine decay floor
# the toy world's definition (dragbench/toy) and this trainer: the three files hashed when it lived there
SOURCE_FILES = (
    Path(__file__).resolve().parents[1] / "dragbench/toy/scenes.py",
    Path(__file__).resolve().parents[1] / "dragbench/toy/model.py",
    Path(__file__).resolve(),
)


@dataclass
class TrainConfig:
    """Knobs of one training run (CLI flags of the same names, `_` -> `-`)."""

    out: str
    ckpt: str | None = None
    device: str = "cpu"
    seed: int = 0
    batch: int = 64
    vae_minutes: float = 2.0
    unet_minutes: float = 4.5
    vae_steps: int | None = None  # when set, a phase ends at whichever of steps / minutes comes first
    unet_steps: int | None = None
    vae_lr: float = 1e-3
    unet_lr: float = 1e-3
    ema_decay: float = 0.999
    warmup_steps: int = 100
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    scale_batches: int = 8
    ckpt_every_s: float = 60.0
    log_every: int = 25
    unet_config: dict = field(default_factory=lambda: dict(TOY_UNET_CONFIG))
    vae_config: dict = field(default_factory=lambda: dict(TOY_VAE_CONFIG))
    text_config: dict = field(default_factory=lambda: dict(TOY_TEXT_CONFIG))


def code_version() -> str:
    """sha256 (12 hex) of the sources that define the toy world and its training."""
    h = hashlib.sha256()
    for path in SOURCE_FILES:
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def alphas_cumprod(device: torch.device) -> torch.Tensor:
    """ᾱ_t of SD's scaled_linear schedule (protocol §2), float (1000,)."""
    n, b0, b1 = DDIM_CONFIG["num_train_timesteps"], DDIM_CONFIG["beta_start"], DDIM_CONFIG["beta_end"]
    betas = torch.linspace(b0**0.5, b1**0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float().to(device)


def lr_factor(step: int, progress: float, warmup_steps: int) -> float:
    """Linear warm-up over `warmup_steps`, then cosine from 1 to MIN_LR_FRACTION over progress in [0, 1]."""
    warm = min(1.0, (step + 1) / max(warmup_steps, 1))
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return warm * (MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * cosine)


def vae_loss(vae: AutoencoderKL, images: torch.Tensor, coverage: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Object-weighted L1 + L2 reconstruction plus a small KL term.

    Args:
        images: float (B, 3, H, W) in [-1, 1].
        coverage: float (B, K, H, W) object coverage; object pixels weigh 1 + OBJECT_WEIGHT.
    """
    post = vae.encode(images).latent_dist
    recon = vae.decode(post.sample()).sample
    weight = 1 + OBJECT_WEIGHT * coverage.sum(1, keepdim=True).clamp(max=1)  # (B, 1, H, W)
    err = recon.float() - images
    rec = (weight * (err.abs() + err**2)).mean() / weight.mean()
    kl = post.kl().mean() / post.mean[0].numel()
    mse = (err**2).mean().item() / 4  # in [0, 1] units
    stats = {"rec": rec.item(), "kl": kl.item(), "psnr": -10 * math.log10(max(mse, 1e-12))}
    return rec + KL_WEIGHT * kl, stats


class Trainer:
    """Holds models, optimisers and RNG state; runs the phases with time/step budgets; saves and resumes."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.vae = AutoencoderKL(**cfg.vae_config).to(self.device)
        torch.manual_seed(cfg.seed)
        self.unet = UNet2DConditionModel(**cfg.unet_config).to(self.device)
        torch.manual_seed(cfg.seed)
        self.text = CLIPTextModel(CLIPTextConfig(**cfg.text_config)).to(self.device)
        self.ema = [copy.deepcopy(m).requires_grad_(False) for m in (self.unet, self.text)]  # EMA weights
        self.tokenizer = build_offline_tokenizer()
        self.token_cache: dict[str, list[int]] = {}
        self.gen = torch.Generator(self.device).manual_seed(cfg.seed)
        self.vae_opt = torch.optim.AdamW(self.vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
        params = list(self.unet.parameters()) + list(self.text.parameters())
        self.unet_opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=1e-2)
        self.state = {"phase": "vae", "step": 0, "elapsed": 0.0, "scale": None,
                      "vae_steps": 0, "unet_steps": 0}
        self.acp = alphas_cumprod(self.device)
        self.log_path = Path(cfg.out) / "train_log.jsonl"

    # ---- data -------------------------------------------------------------------------------------------
    def batch(self) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        scene = random_scenes(self.cfg.batch, IMAGE_SIZE, self.gen)
        image, coverage = render(scene, IMAGE_SIZE, IMAGE_SIZE)
        return image * 2 - 1, coverage, batch_captions(scene)

    def token_ids(self, captions: list[str]) -> torch.Tensor:
        """Padded token ids (B, 77), assembled from per-word tokens (exactly the tokenizer's output: the
        offline tokenizer has no merges, so a caption tokenizes word by word; tests check the equality)."""
        tok = self.tokenizer
        rows = []
        for c in captions:
            ids = [tok.bos_token_id]
            for word in c.replace(",", " ,").split():
                if word not in self.token_cache:
                    self.token_cache[word] = tok(word, add_special_tokens=False).input_ids
                ids += self.token_cache[word]
            ids = ids[: tok.model_max_length - 1] + [tok.eos_token_id]
            rows.append(ids + [tok.pad_token_id] * (tok.model_max_length - len(ids)))
        return torch.tensor(rows, device=self.device)

    def autocast(self):
        enabled = self.cfg.amp and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    # ---- phases -----------------------------------------------------------------------------------------
    def run(self) -> dict:
        """Run (or resume) all phases; return the summary written to toy_train.json."""
        Path(self.cfg.out).mkdir(parents=True, exist_ok=True)
        self.resume()
        if self.state["phase"] == "vae":
            self.phase("vae", self.cfg.vae_minutes, self.cfg.vae_steps, self.vae_step)
            self.state.update(phase="scale", step=0, elapsed=0.0)
            self.save_ckpt()
        if self.state["phase"] == "scale":
            self.state["scale"] = self.measure_scale()
            self.state.update(phase="unet", step=0, elapsed=0.0)
            self.save_ckpt()
        if self.state["phase"] == "unet":
            self.phase("unet", self.cfg.unet_minutes, self.cfg.unet_steps, self.unet_step)
            self.state.update(phase="done")
            self.save_ckpt()
        return self.export()

    def phase(self, name: str, minutes: float, steps: int | None, step_fn) -> None:
        budget = minutes * 60
        start = time.monotonic() - self.state["elapsed"]
        last_ckpt = time.monotonic()
        bar = tqdm(total=steps, initial=self.state["step"], desc=name, mininterval=5)
        while True:
            elapsed = time.monotonic() - start
            step = self.state["step"]
            if elapsed >= budget or (steps is not None and step >= steps):
                break
            progress = max(elapsed / budget, step / steps if steps else 0.0)
            stats = step_fn(step, progress)
            self.state.update(step=step + 1, elapsed=time.monotonic() - start)
            self.state[f"{name}_steps"] = step + 1
            bar.update(1)
            if step % self.cfg.log_every == 0:
                bar.set_postfix({k: f"{v:.4g}" for k, v in stats.items()})
                self.write_log({"phase": name, "step": step, "seconds": round(elapsed, 1), **stats})
            if time.monotonic() - last_ckpt > self.cfg.ckpt_every_s:
                self.save_ckpt()
                last_ckpt = time.monotonic()
        bar.close()
        log.info("%s: %d steps in %.0f s", name, self.state["step"], self.state["elapsed"])

    def vae_step(self, step: int, progress: float) -> dict:
        for g in self.vae_opt.param_groups:
            g["lr"] = self.cfg.vae_lr * lr_factor(step, progress, self.cfg.warmup_steps)
        images, coverage, _ = self.batch()
        with self.autocast():
            loss, stats = vae_loss(self.vae, images, coverage)
        self.vae_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.vae.parameters(), 1.0)
        self.vae_opt.step()
        return {"loss": loss.item(), **stats}

    @torch.no_grad()
    def encode(self, images: torch.Tensor, sample: bool) -> torch.Tensor:
        post = self.vae.encode(images).latent_dist
        return (post.sample(self.gen) if sample else post.mean).float()

    @torch.no_grad()
    def measure_scale(self) -> float:
        """1 / std of the VAE's posterior-mean latents over fresh scenes (stored as vae scaling_factor)."""
        self.vae.eval()
        lat = torch.cat([self.encode(self.batch()[0], sample=False) for _ in range(self.cfg.scale_batches)])
        scale = 1.0 / lat.std().item()
        log.info("latent mean %.4f std %.4f -> scaling_factor %.5f", lat.mean(), lat.std(), scale)
        self.write_log({"phase": "scale", "latent_mean": lat.mean().item(), "latent_std": lat.std().item()})
        return scale

    def unet_step(self, step: int, progress: float) -> dict:
        for g in self.unet_opt.param_groups:
            g["lr"] = self.cfg.unet_lr * lr_factor(step, progress, self.cfg.warmup_steps)
        self.vae.eval().requires_grad_(False)
        images, _, captions = self.batch()
        z0 = self.encode(images, sample=True) * self.state["scale"]
        t = torch.randint(0, len(self.acp), (len(z0),), generator=self.gen, device=self.device)
        noise = torch.randn(z0.shape, generator=self.gen, device=self.device)
        a = self.acp[t].view(-1, 1, 1, 1)  # (B, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        with self.autocast():
            cond = self.text(self.token_ids(captions))[0]
            pred = self.unet(zt, t, encoder_hidden_states=cond).sample
        loss = F.mse_loss(pred.float(), noise)
        self.unet_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(self.unet.parameters()) + list(self.text.parameters()), 1.0)
        self.unet_opt.step()
        self.update_ema(step)
        return {"loss": loss.item()}

    @torch.no_grad()
    def update_ema(self, step: int) -> None:
        decay = min(self.cfg.ema_decay, (1 + step) / (10 + step))
        for ema, model in zip(self.ema, (self.unet, self.text), strict=True):
            for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)

    # ---- state ------------------------------------------------------------------------------------------
    def write_log(self, row: dict) -> None:
        with open(self.log_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def _modules(self) -> dict:
        return {"vae": self.vae, "unet": self.unet, "text": self.text, "ema_unet": self.ema[0],
                "ema_text": self.ema[1], "vae_opt": self.vae_opt, "unet_opt": self.unet_opt}

    def save_ckpt(self) -> None:
        if not self.cfg.ckpt:
            return
        path = Path(self.cfg.ckpt) / "state.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {k: m.state_dict() for k, m in self._modules().items()}
        blob.update(state=self.state, gen=self.gen.get_state(), config=asdict(self.cfg))
        torch.save(blob, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)

    def resume(self) -> None:
        path = Path(self.cfg.ckpt) / "state.pt" if self.cfg.ckpt else None
        if path is None or not path.exists():
            return
        # weights_only: the checkpoint holds only tensors and plain containers (state dicts, the RNG state,
        # numbers, the config), so nothing in it is ever executed on load.
        blob = torch.load(path, map_location=self.device, weights_only=True)
        for k, m in self._modules().items():
            m.load_state_dict(blob[k])
        self.state = blob["state"]
        self.gen.set_state(blob["gen"])
        log.info("Resumed from %s at phase %s step %d", path, self.state["phase"], self.state["step"])

    @torch.no_grad()
    def evaluate(self) -> dict:
        """VAE reconstruction PSNR (posterior mean) and EMA ε-MSE at a few timesteps, on fresh scenes."""
        self.vae.eval()
        images, coverage, captions = self.batch()
        recon = self.vae.decode(self.encode(images, sample=False)).sample.clamp(-1, 1)
        err2 = ((recon - images) / 2) ** 2
        obj = coverage.sum(1, keepdim=True).clamp(max=1).expand_as(err2) > 0.5
        out = {"vae_psnr": -10 * math.log10(err2.mean().item()),
               "vae_psnr_objects": -10 * math.log10(err2[obj].mean().item())}
        z0 = self.encode(images, sample=False) * self.state["scale"]
        cond = self.ema[1](self.token_ids(captions))[0]
        for t_val in (100, 500, 681, 900):
            t = torch.full((len(z0),), t_val, device=self.device)
            noise = torch.randn(z0.shape, generator=self.gen, device=self.device)
            a = self.acp[t_val]
            pred = self.ema[0](a.sqrt() * z0 + (1 - a).sqrt() * noise, t, encoder_hidden_states=cond).sample
            out[f"eps_mse_t{t_val}"] = F.mse_loss(pred, noise).item()
        return out

    def export(self) -> dict:
        """Write the flat output folder (EMA weights, fp32) and return the summary."""
        out = Path(self.cfg.out)
        for name, model in (("vae", self.vae), ("unet", self.ema[0]), ("text_encoder", self.ema[1])):
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / f"{name}.safetensors")
        vae_config = {**self.cfg.vae_config, "scaling_factor": self.state["scale"]}
        summary = {
            "code_version": code_version(),
            "config": {**asdict(self.cfg), "vae_config": vae_config},
            "vae_steps": self.state["vae_steps"],
            "unet_steps": self.state["unet_steps"],
            "scaling_factor": self.state["scale"],
            "eval": self.evaluate(),
            "torch": torch.__version__,
            "device_name": torch.cuda.get_device_name() if self.device.type == "cuda" else "cpu",
        }
        (out / "toy_train.json").write_text(json.dumps(summary, indent=1, default=str))
        log.info("Wrote %s: %s", out, summary["eval"])
        return summary


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = TrainConfig(out="")
    p.add_argument("--out", required=True, help="flat output folder (weights + toy_train.json)")
    for name in ("ckpt", "device", "seed", "batch", "vae_minutes", "unet_minutes", "vae_steps", "unet_steps",
                 "vae_lr", "unet_lr", "ema_decay", "warmup_steps", "scale_batches", "ckpt_every_s"):
        default = getattr(defaults, name)
        typ = {int: int, float: float}.get(type(default), str)
        if name in ("vae_steps", "unet_steps"):
            typ = int
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=default)
    p.add_argument("--no-amp", dest="amp", action="store_false")
    return TrainConfig(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = parse_args(argv)
    if cfg.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    summary = Trainer(cfg).run()
    print(json.dumps(summary["eval"]))


if __name__ == "__main__":
    main()
