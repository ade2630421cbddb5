"""Turn train.py's flat output folder into the diffusers `save_pretrained` pipeline layout.

    python -m toy_training.assemble FLAT_DIR [--dest dragbench/toy/weights] [--dtype float16]

Writes model_index.json + unet/ vae/ text_encoder/ tokenizer/ scheduler/ (what `load_pretrained` reads),
plus training_summary.json (toy_train.json of the run) beside them.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel

from dragbench.backbone import DDIM_CONFIG
from dragbench.tokenizer_offline import build_offline_tokenizer
from dragbench.toy.model import WEIGHTS_DIR

log = logging.getLogger(__name__)

MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.42.1",
    "feature_extractor": [None, None],
    "image_encoder": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def _tuples(config: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}


def assemble(flat_dir: str | Path, dest: str | Path = WEIGHTS_DIR, dtype: str = "float16") -> Path:
    """Build the models from toy_train.json's configs, load the flat weights, `save_pretrained` them.

    Args:
        flat_dir: folder with unet/vae/text_encoder .safetensors and toy_train.json (train.py's --out).
        dest: pipeline folder to (re)write.
        dtype: storage dtype of the saved weights ("float16" keeps the committed model under 10 MB).

    Returns:
        The destination folder.
    """
    flat, dest = Path(flat_dir), Path(dest)
    summary = json.loads((flat / "toy_train.json").read_text())
    cfg = summary["config"]
    torch_dtype = {"float16": torch.float16, "float32": torch.float32}[dtype]
    models = {
        "unet": UNet2DConditionModel(**_tuples(cfg["unet_config"])),
        "vae": AutoencoderKL(**_tuples(cfg["vae_config"])),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**cfg["text_config"])),
    }
    dest.mkdir(parents=True, exist_ok=True)
    for name, model in models.items():
        model.load_state_dict(load_file(flat / f"{name}.safetensors"), strict=True)
        if (dest / name).exists():
            shutil.rmtree(dest / name)
        model.to(torch_dtype).save_pretrained(dest / name, safe_serialization=True)
    build_offline_tokenizer().save_pretrained(dest / "tokenizer")
    DDIMScheduler(**DDIM_CONFIG).save_pretrained(dest / "scheduler")
    (dest / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2) + "\n")
    (dest / "training_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    log.info("Assembled %s -> %s (%s)", flat, dest, dtype)
    return dest


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("flat_dir")
    p.add_argument("--dest", default=str(WEIGHTS_DIR))
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    args = p.parse_args(argv)
    print(assemble(args.flat_dir, args.dest, args.dtype))


if __name__ == "__main__":
    main()
