"""CLIP routing of the DragGAN ensemble (protocol §12): each image goes to the generator whose text
description has the highest CLIP image-text cosine similarity, as the DragDiffusion paper ran DragGAN.

`clip_checkpoint` is a transformers CLIP checkpoint (hub id or folder; default `openai/clip-vit-large-patch14`,
the public CLIP of the paper's era) or "random": a tiny seeded random CLIP built from a config in memory, with
the offline byte-level tokenizer (dragbench/tokenizer_offline.py) and a `CLIPImageProcessor` built from
arguments, so offline runs route through exactly the same code with nothing downloaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from dragbench.tokenizer_offline import MODEL_MAX_LENGTH, build_offline_tokenizer
from dragbench.weights import WeightFile, model_repo_requirements

RANDOM_CLIP = "random"  # clip_checkpoint value: the tiny random CLIP below (weights=random)
# Most seeds send every image to one domain (random text embeddings of similar strings); seed 4 spreads the
# 12 shared real DragBench samples over 4 domains, so offline runs exercise several generators.
TINY_CLIP_SEED = 4
TINY_CLIP_IMAGE_SIZE = 32
# What CLIPModel / CLIPTokenizer / CLIPImageProcessor `from_pretrained` read at a checkpoint's root
# (any one name of a group will do: the slow tokenizer's vocab + merges, or a fast tokenizer.json, which is all
# transformers 5 saves).
CLIP_FILES: dict[str, tuple[str, ...]] = {
    "config.json": ("config.json",),
    "model.safetensors": ("model.safetensors", "pytorch_model.bin"),
    "vocab.json": ("vocab.json", "tokenizer.json"),
    "merges.txt": ("merges.txt", "tokenizer.json"),
    "preprocessor_config.json": ("preprocessor_config.json",),
}


@dataclass(frozen=True)
class RouteChoice:
    """The routing of one image: the chosen domain and every domain's cosine similarity."""

    domain: str
    similarities: dict[str, float]


def pick_domain(image_embed: Tensor, text_embeds: Tensor, names: list[str]) -> RouteChoice:
    """The domain whose text embedding has the highest cosine similarity with the image embedding.

    Args:
        image_embed: (D,) image embedding (any norm).
        text_embeds: (K, D) one text embedding per domain (any norm), in the order of `names`.
        names: the K domain names.
    Ties go to the first domain in `names` (config order).
    """
    if text_embeds.shape[0] != len(names):
        raise ValueError(f"{text_embeds.shape[0]} text embeddings for {len(names)} domains")
    image = image_embed.double() / image_embed.double().norm()
    texts = text_embeds.double() / text_embeds.double().norm(dim=-1, keepdim=True)
    sims = (texts @ image).cpu()  # (K,)
    best = int(torch.argmax(sims))  # first maximum
    return RouteChoice(names[best], {n: float(s) for n, s in zip(names, sims, strict=True)})


def build_tiny_clip(seed: int = TINY_CLIP_SEED) -> tuple[CLIPModel, CLIPTokenizer, CLIPImageProcessor]:
    """A tiny randomly initialised CLIP (2-layer 32-wide text and vision towers, 16-d projection, 32 px
    images), the offline tokenizer and an image processor with CLIP's normalisation; nothing is read from disk."""
    tokenizer = build_offline_tokenizer()
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=MODEL_MAX_LENGTH,
            bos_token_id=0,
            eos_token_id=1,  # the offline tokenizer's <|endoftext|>: the text tower pools there
            pad_token_id=1,
        ),
        vision_config=dict(
            image_size=TINY_CLIP_IMAGE_SIZE,
            patch_size=8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
        ),
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):  # seeded weights without moving the caller's RNG
        torch.manual_seed(seed)
        model = CLIPModel(config)
    # CLIP's own preprocessing (shortest edge -> size, centre crop, bicubic, CLIP mean/std) at the tiny size
    processor = CLIPImageProcessor(
        size={"shortest_edge": TINY_CLIP_IMAGE_SIZE},
        crop_size={"height": TINY_CLIP_IMAGE_SIZE, "width": TINY_CLIP_IMAGE_SIZE},
    )
    return model, tokenizer, processor


def clip_requirements(clip_checkpoint: str) -> list[WeightFile]:
    """Files the router reads for `clip_checkpoint` (none for "random"); hub files download on first use
    unless HF_HUB_OFFLINE."""
    if clip_checkpoint == RANDOM_CLIP:
        return []
    return model_repo_requirements(clip_checkpoint, "CLIP (DragGAN routing)", CLIP_FILES, "clip_checkpoint")


def _features(output: Tensor | object) -> Tensor:
    """transformers < 5 returns the projected features as a tensor, 5.x as `.pooler_output` of an output."""
    return output if isinstance(output, Tensor) else output.pooler_output  # type: ignore[attr-defined]


class ClipRouter:
    """Routes images to domains by CLIP image-text similarity; the text side is embedded once, here.

    Args:
        model: a transformers `CLIPModel`.
        tokenizer: its tokenizer.
        image_processor: its `CLIPImageProcessor`.
        descriptions: domain name -> text description (config order = tie order).
        device: where CLIP runs.
    """

    def __init__(
        self,
        model: CLIPModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: CLIPImageProcessor,
        descriptions: Mapping[str, str],
        device: torch.device,
    ) -> None:
        self.model = model.to(device).eval().requires_grad_(False)
        self.image_processor, self.device = image_processor, device
        self.names = list(descriptions)
        tokens = tokenizer(
            [descriptions[n] for n in self.names], padding=True, truncation=True, return_tensors="pt"
        ).to(device)
        with torch.no_grad():
            self.text_embeds = _features(self.model.get_text_features(**tokens))  # (K, D)

    @classmethod
    def from_checkpoint(
        cls, clip_checkpoint: str, descriptions: Mapping[str, str], device: torch.device
    ) -> ClipRouter:
        """Load `clip_checkpoint` (hub id or folder, via transformers; "random": `build_tiny_clip()`)."""
        if clip_checkpoint == RANDOM_CLIP:
            model, tokenizer, processor = build_tiny_clip()
        else:
            model = CLIPModel.from_pretrained(clip_checkpoint)
            tokenizer = CLIPTokenizer.from_pretrained(clip_checkpoint)
            processor = CLIPImageProcessor.from_pretrained(clip_checkpoint)
        return cls(model, tokenizer, processor, descriptions, device)

    def __call__(self, image: np.ndarray) -> RouteChoice:
        """Route one uint8 (H, W, 3) image."""
        image = np.array(image, copy=True)  # the processor wraps it in a tensor: a read-only array warns
        pixels = self.image_processor(images=[image], return_tensors="pt").pixel_values.to(self.device)
        with torch.no_grad():
            image_embed = _features(self.model.get_image_features(pixel_values=pixels))[0]  # (D,)
        return pick_domain(image_embed, self.text_embeds, self.names)
