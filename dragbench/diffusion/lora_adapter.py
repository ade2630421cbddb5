"""The DragDiffusion LoRA adapter on a shared UNet (protocol §2 "LoRA" row): apply/remove exactly, save/load.

peft (via diffusers' `add_adapter`) wraps `to_q, to_k, to_v, to_out.0` of every attention; removal unwraps
them again, so the shared backbone is left bit-identical. Files keep rank and lora_alpha in their metadata
(protocol §2 trap: without alpha, reloads differ).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from peft import LoraConfig
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

LORA_TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]  # protocol §2: every attention's projections
ADAPTER_NAME = "dragdiffusion_lora"
LORA_FILE_FORMAT = "dragbench-lora-v1"  # safetensors metadata "format"

LoraStateDict = dict[str, Tensor]


# ---------------------------------------------------------------------------------------------------------
# Adding / removing the peft adapter without leaving a trace on the shared UNet
# ---------------------------------------------------------------------------------------------------------


def lora_config(rank: int, alpha: int) -> LoraConfig:
    """The peft config of protocol §2 (gaussian init: lora_A ~ N(0, 1/rank²), lora_B = 0, so a fresh adapter is a
    no-op; scaling = alpha / rank)."""
    return LoraConfig(
        r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=LORA_TARGET_MODULES
    )


def lora_parameters(unet: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Our adapter's parameters, keyed like peft's `get_peft_model_state_dict` (adapter name removed)."""
    marker = f".{ADAPTER_NAME}."
    return {
        name.replace(marker, "."): p
        for name, p in unet.named_parameters()
        if "lora_" in name and marker in name
    }


@contextmanager
def adapter_added(
    unet: UNet2DConditionModel, rank: int, alpha: int
) -> Iterator[dict[str, torch.nn.Parameter]]:
    """Add our peft adapter inside the block, then unwrap it and restore every UNet flag.

    Yields our adapter's parameters keyed like peft's `get_peft_model_state_dict` (adapter name removed).

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
        yield lora_parameters(unet)
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
        k: p.detach().to("cpu", torch.float32, copy=True) for k, p in sorted(lora_parameters(unet).items())
    }


def lora_digest(state_dict: LoraStateDict) -> str:
    """sha256 of a LoRA state (its keys, sorted, and their tensors' bytes): what a cache key records of the
    LoRA applied while an entry was computed (e.g. the inverted latent)."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        digest.update(key.encode())
        digest.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


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
    with adapter_added(unet, rank, alpha) as params:
        _load_exact(params, state_dict)
        for p in params.values():
            p.requires_grad_(False)
        yield unet


@contextmanager
def adapter_scale(unet: UNet2DConditionModel, scale: float) -> Iterator[None]:
    """Multiply the applied adapter's update by `scale` inside the block (scaling = scale · alpha / rank).

    What diffusers' `cross_attention_kwargs={"scale": s}` does to a LoRA; SDE-Drag lowers it along t
    (protocol §10). On exit every layer is back at alpha / rank.

    Raises:
        ValueError: no adapter of ours is applied (use `lora_applied` first).
    """
    from peft.tuners.lora import LoraLayer

    layers = [m for m in unet.modules() if isinstance(m, LoraLayer) and ADAPTER_NAME in m.scaling]
    if not layers:
        raise ValueError("adapter_scale needs an applied LoRA: call it inside lora_applied(unet, ...)")
    for layer in layers:
        layer.set_scale(ADAPTER_NAME, scale)
    try:
        yield
    finally:
        for layer in layers:
            layer.set_scale(ADAPTER_NAME, 1.0)


# ---------------------------------------------------------------------------------------------------------
# Save / load (protocol §2 trap: without lora_alpha in the file, reloads differ)
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
            f"{path}: no rank/lora_alpha metadata; re-save it with dragbench.diffusion.lora.save_lora"
        )
    return state_dict, int(meta["rank"]), int(meta["lora_alpha"])
