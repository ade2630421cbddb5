"""Getting a Stable-Diffusion-shaped backbone: real weights via diffusers, or a tiny seeded one built offline.

Both paths return the same `Backbone` object, so methods and metrics never branch on which one they got.
The tiny models keep SD-1.5's block topology with small widths (the same configuration as the official-ref
tiny pipeline in $DRAGBENCH_SHARED_DATA/official-ref), so "UNet block 3", "attention layer 10" and DIFT's
"up_ft_index 1" mean exactly what they mean on the real models.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from dragbench.diffusion.conditioning import Conditioning, unet_noise
from dragbench.tokenizer_offline import build_offline_tokenizer
from dragbench.weights import (  # noqa: F401  (MissingWeightsError: re-exported, its old home)
    MissingWeightsError,
    WeightFile,
    declares_weights,
    downloads_allowed,
    hf_download_command,
    hub_cache_dir,
    is_hub_id,
    pipeline_requirements,
    source_note,
)

log = logging.getLogger(__name__)

# protocol §2: DDIM with SD's training betas; clip_sample / set_alpha_to_one off, steps_offset 1.
DDIM_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)

# SD-1.5's block topology: 4 down / 4 up UNet blocks with cross-attention where SD has it and 2 layers per
# block (so 16 self-attention layers), a 4-block VAE (factor 8). Variants change only widths.
SD15_UNET_TOPOLOGY = dict(
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
SD15_VAE_TOPOLOGY = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    latent_channels=4,
)
# CLIP text-encoder settings shared by every SD-shaped variant built here (offline tokenizer ids).
CLIP_TEXT_COMMON = dict(
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)

# SD-1.5 topology, small widths (official-ref README, "The tiny model").
TINY_UNET_CONFIG = dict(
    **SD15_UNET_TOPOLOGY,
    sample_size=16,
    block_out_channels=(32, 32, 64, 64),
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=8,
)
TINY_VAE_CONFIG = dict(
    **SD15_VAE_TOPOLOGY,
    block_out_channels=(16, 32, 32, 32),
    layers_per_block=1,
    norm_num_groups=8,
    sample_size=128,
    scaling_factor=0.18215,
)
TINY_TEXT_CONFIG = dict(
    **CLIP_TEXT_COMMON,
    hidden_size=32,
    intermediate_size=37,
    num_attention_heads=4,
    num_hidden_layers=5,
    vocab_size=1000,
)


@dataclass(eq=False)
class Backbone:
    """The components of a latent diffusion model, on one device and dtype.

    Implements `dragbench.diffusion.ConditionedBackbone` (`condition`, `predict_noise`) for SD-1.x/2.x.

    Attributes:
        unet, vae, text_encoder, tokenizer, scheduler: the diffusers / transformers objects.
        device: torch device the models live on.
        dtype: their floating-point dtype.
        weights: "real" (pretrained), "random" (tiny, seeded init) or another label (e.g. "toy").
        name: where the weights came from (hub id, folder, or "tiny").
    """

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: DDIMScheduler
    device: torch.device
    dtype: torch.dtype
    weights: str
    name: str

    @property
    def latent_scale(self) -> float:
        """VAE latent scaling factor, read from the VAE config (0.18215 for SD-1.5)."""
        return float(self.vae.config.scaling_factor)

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell (8 for SD)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode_prompt(self, prompt: str | list[str]) -> torch.Tensor:
        """Token ids padded to the tokenizer's max length -> text encoder `last_hidden_state` (B, 77, D).

        No attention mask, as SD and the official DragDiffusion code do.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        return self.text_encoder(ids)[0]

    def condition(self, prompt: str | list[str]) -> Conditioning:
        """The prompt(s) as the UNet's conditioning: `encode_prompt`'s states, no added conditioning."""
        return Conditioning(encoder_hidden_states=self.encode_prompt(prompt))

    def predict_noise(
        self, latents: torch.Tensor, timestep: torch.Tensor | int, cond: Conditioning
    ) -> torch.Tensor:
        """Epsilon (B, 4, h, w) for latents (B, 4, h, w) at `timestep` under `cond`."""
        return unet_noise(self.unet, latents, timestep, cond)

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 of every UNet / VAE / text-encoder weight and of the scheduler config (computed once).

        The model part of every cache key: `name` is a label ("tiny" for every seed) or a machine path, so
        it can neither tell two models apart nor match one model across machines. LoRA adapter weights
        (peft keys with "lora_") are left out, so the value does not depend on when it is first read.
        """
        # skip "_" keys: diffusers bookkeeping (`_use_default_values` is in set order, varies per process)
        config = {k: v for k, v in self.scheduler.config.items() if not k.startswith("_")}
        digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
        for part in ("unet", "vae", "text_encoder"):
            for key, tensor in getattr(self, part).state_dict().items():
                if "lora_" in key:
                    continue
                digest.update(f"{part}.{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
                digest.update(tensor.detach().reshape(-1).cpu().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def fresh_scheduler(self) -> DDIMScheduler:
        """A new DDIM scheduler with this backbone's config (schedulers hold per-run state)."""
        return DDIMScheduler.from_config(self.scheduler.config)


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else is passed to torch.device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    except KeyError:
        raise ValueError(f"dtype must be one of float32|float16|bfloat16, got {dtype!r}") from None


def _finish(parts: dict, device: torch.device, dtype: torch.dtype, weights: str, name: str) -> Backbone:
    for key in ("unet", "vae", "text_encoder"):
        parts[key].to(device=device, dtype=dtype).eval().requires_grad_(False)
    return Backbone(**parts, device=device, dtype=dtype, weights=weights, name=name)


def build_tiny_components(seed: int = 0) -> dict:
    """The tiny SD-1.5-shaped components on CPU in fp32 (seed re-set before each model, diffusers-style)."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET_CONFIG)
    torch.manual_seed(seed)
    vae = AutoencoderKL(**TINY_VAE_CONFIG)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_TEXT_CONFIG))
    return dict(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=build_offline_tokenizer(),
        scheduler=DDIMScheduler(**DDIM_CONFIG),
    )


@functools.cache
def build_tiny(seed: int = 0, device: str = "cpu", dtype: str = "float32") -> Backbone:
    """A tiny, randomly initialised SD-shaped backbone; no file or network access. Memoised per process.

    Args:
        seed: torch seed set before building each model.
        device: "cpu", "cuda", "auto".
        dtype: "float32" | "float16" | "bfloat16".
    """
    parts = build_tiny_components(seed)
    return _finish(parts, resolve_device(device), resolve_dtype(dtype), weights="random", name="tiny")


def _missing_weights_message(pretrained: str, local_files_only: bool, err: Exception) -> str:
    local = not is_hub_id(pretrained)
    where = "a local diffusers pipeline folder" if local else f"the Hugging Face cache {hub_cache_dir()}"
    how = (
        "check that the folder holds model_index.json and the unet/vae/text_encoder/tokenizer subfolders"
        if local
        else f"download it once with `{hf_download_command(pretrained)}`{source_note(pretrained)} (or point "
        "`pretrained` at a local pipeline folder)"
    )
    offline = "" if downloads_allowed(local_files_only) else " (local_files_only/HF_HUB_OFFLINE: no download)"
    return f"weights for {pretrained!r} not found in {where}{offline}: {how}. Cause: {type(err).__name__}"


def pretrained_requirements(
    pretrained: str, local_files_only: bool = False, revision: str | None = None, role: str = "SD backbone"
) -> list[WeightFile]:
    """What `load_pretrained` reads (unet/, vae/, text_encoder/, tokenizer/), without loading it."""
    return pipeline_requirements(pretrained, role, local_files_only, revision)


@declares_weights(pretrained_requirements)
@functools.cache
def load_pretrained(
    pretrained: str,
    local_files_only: bool = False,
    device: str = "auto",
    dtype: str = "float32",
    weights: str = "real",
    revision: str | None = None,
) -> Backbone:
    """Load SD components with diffusers `from_pretrained` from a hub id or a local pipeline folder.

    Memoised per process, so every job a process runs reuses the models.

    Args:
        pretrained: hub id (e.g. "stable-diffusion-v1-5/stable-diffusion-v1-5") or local pipeline folder.
        local_files_only: never touch the network.
        device: "cpu", "cuda", "auto".
        dtype: "float32" | "float16" | "bfloat16".
        weights: label written to every result ("real", or e.g. "toy" for the toy-world model).
        revision: optional hub revision.

    Raises:
        MissingWeightsError: the weights are not there; one line saying what and how to get them.
    """
    common = dict(local_files_only=local_files_only, revision=revision)
    try:
        parts = dict(
            unet=UNet2DConditionModel.from_pretrained(pretrained, subfolder="unet", **common),
            vae=AutoencoderKL.from_pretrained(pretrained, subfolder="vae", **common),
            text_encoder=CLIPTextModel.from_pretrained(pretrained, subfolder="text_encoder", **common),
            tokenizer=CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer", **common),
        )
    except (OSError, ValueError) as err:  # diffusers/transformers raise OSError (or EnvironmentError) here
        raise MissingWeightsError(_missing_weights_message(pretrained, local_files_only, err)) from None
    # protocol §2: the harness always uses its own DDIM configuration, as the official code does.
    parts["scheduler"] = DDIMScheduler(**DDIM_CONFIG)
    log.info("Loaded backbone %s", pretrained)
    return _finish(parts, resolve_device(device), resolve_dtype(dtype), weights, str(pretrained))
