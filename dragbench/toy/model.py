"""The toy-world model: a small SD-1.5-shaped latent diffusion model trained on toy scenes (toy.train).

Architecture as SD-1.5 (4 down / 4 up UNet blocks, cross-attention where SD has it, 16 self-attention layers)
with small widths, a factor-4 VAE (3 blocks: 64 px images -> 16x16 latents) and a small CLIP text encoder
over the offline byte-level tokenizer. The committed weights live in `dragbench/toy/weights/`.
"""

from __future__ import annotations

from pathlib import Path

from dragbench.backbone import SD15_UNET_TOPOLOGY, SD15_VAE_TOPOLOGY, Backbone, load_pretrained
from dragbench.weights import WeightFile, declares_weights, pipeline_requirements

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
IMAGE_SIZE = 64  # toy scenes are 64x64 (the probe: 64 px + factor-4 VAE beat 128 px + factor 8)

TOY_UNET_CONFIG = dict(
    **SD15_UNET_TOPOLOGY,
    sample_size=16,
    block_out_channels=(32, 64, 64, 64),
    cross_attention_dim=64,
    attention_head_dim=8,
    norm_num_groups=8,
)
TOY_VAE_CONFIG = dict(
    SD15_VAE_TOPOLOGY,
    down_block_types=("DownEncoderBlock2D",) * 3,  # 3 blocks instead of SD's 4 -> downsampling factor 4
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    norm_num_groups=8,
    sample_size=IMAGE_SIZE,
    scaling_factor=1.0,  # replaced by 1 / std of the trained VAE's latents (measured by train.py)
)
TOY_TEXT_CONFIG = dict(
    hidden_size=64,  # = TOY_UNET_CONFIG["cross_attention_dim"]
    intermediate_size=128,
    num_attention_heads=4,
    num_hidden_layers=2,
    vocab_size=514,  # the offline byte-level tokenizer's vocabulary
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=1,
)


def toy_requirements(weights_dir: str | None = None) -> list[WeightFile]:
    """The pipeline folder `load_toy_backbone` reads (committed: present in every clone)."""
    folder = str(weights_dir) if weights_dir is not None else str(WEIGHTS_DIR)
    return pipeline_requirements(folder, "toy model", local_files_only=True)


@declares_weights(toy_requirements)
def load_toy_backbone(
    device: str = "auto", dtype: str = "float32", weights_dir: str | None = None
) -> Backbone:
    """Load the committed toy-world model through the ordinary pretrained path, offline.

    Args:
        device: "cpu", "cuda", "auto".
        dtype: "float32" | "float16" | "bfloat16".
        weights_dir: a diffusers pipeline folder; default the committed `dragbench/toy/weights`.

    Raises:
        dragbench.backbone.MissingWeightsError: the folder lacks the model (see dragbench/toy/README.md).
    """
    folder = str(weights_dir) if weights_dir is not None else str(WEIGHTS_DIR)
    return load_pretrained(folder, local_files_only=True, device=device, dtype=dtype, weights="toy")
