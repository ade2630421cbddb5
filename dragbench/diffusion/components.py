"""A method's own VAE or UNet in place of the backbone's (GoodDrag's sd-vae-ft-mse, FastDrag's LCM UNet).

A method's config names the component with one knob (`vae:` / `unet:`):

- `auto` (the conf default): the paper's component when the backbone itself came from the hub (the paper's
  setting: SD-1.5 by hub id), the backbone's own when `model.pretrained` is a local folder or the tiny model
  (offline and tiny-weight runs, where the paper's component cannot exist). The choice is logged once and
  each method records it (`info/vae`, `info/unet`), so a result always says which component produced it.
- `own` or null: the backbone's own component.
- anything else: a hub id ("org/name", or "org/name/subfolder" for a pipeline repo) or a local folder (a
  model folder, or a pipeline folder with a `vae/` or `unet/` subfolder).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from dragbench.backbone import Backbone
from dragbench.weights import (
    PIPELINE_FILES,
    MissingWeightsError,
    WeightFile,
    downloads_allowed,
    hub_cache_dir,
    is_hub_id,
    pipeline_requirements,
)

log = logging.getLogger(__name__)

AUTO, OWN = "auto", "own"
ROLES = ("vae", "unet")  # the pipeline subfolder each component lives in


def resolve_component(choice: str | None, paper_default: str, backbone_name: str) -> str | None:
    """The source to load (hub id / folder), or None for the backbone's own component.

    Args:
        choice: the method's knob: "auto", "own"/None, or a hub id / folder.
        paper_default: the component the paper used (hub id, e.g. "stabilityai/sd-vae-ft-mse").
        backbone_name: `Backbone.name` (`model.pretrained`: a hub id, a folder, or "tiny").
    """
    if choice in (None, OWN):
        return None
    if choice == AUTO:
        return paper_default if is_hub_id(backbone_name) else None
    return str(choice)


def _split_hub(source: str) -> tuple[str, str | None]:
    """ "org/name/sub" -> ("org/name", "sub"); "org/name" -> ("org/name", None)."""
    parts = source.split("/")
    return "/".join(parts[:2]), ("/".join(parts[2:]) or None)


def _is_hub_source(source: str) -> bool:
    return not Path(source).expanduser().exists() and is_hub_id(_split_hub(source)[0])


def _local_subfolder(folder: Path, role: str) -> str | None:
    return role if (folder / role / "config.json").is_file() else None


def component_requirements(
    choice: str | None,
    paper_default: str,
    backbone_pretrained: str,
    role: str,
    what: str,
    knob: str,
    local_files_only: bool = False,
) -> list[WeightFile]:
    """The weight files `load_component` will read for this choice ([] for the backbone's own).

    Args:
        choice, paper_default: as `resolve_component`.
        backbone_pretrained: `model.pretrained` of the job.
        role: "vae" or "unet".
        what: human name, e.g. "GoodDrag VAE (sd-vae-ft-mse)".
        knob: the method's config key, e.g. "vae".
        local_files_only: no download on first use.
    """
    source = resolve_component(choice, paper_default, backbone_pretrained)
    if source is None:
        return []
    if _is_hub_source(source):
        repo, sub = _split_hub(source)
        if sub is not None:
            rows = pipeline_requirements(repo, what, local_files_only, subfolders=(sub,))
            return [WeightFile(**{**row.__dict__, "knob": knob}) for row in rows]
        from huggingface_hub import try_to_load_from_cache

        present = all(
            any(isinstance(try_to_load_from_cache(repo, name, cache_dir=hub_cache_dir()), str) for name in group)
            for group in PIPELINE_FILES[role]
        )
        how = f"`hf download {repo}`; or set {{knob}}=own (the backbone's own {role}) or a local folder"
        where = str(hub_cache_dir() / f"models--{repo.replace('/', '--')}")
        return [WeightFile(what, "./", where, present, repo, how, downloads_allowed(local_files_only), knob)]
    folder = Path(source).expanduser()
    sub = _local_subfolder(folder, role)
    base = folder / sub if sub else folder
    present = all(any((base / name).is_file() for name in group) for group in PIPELINE_FILES[role])
    how = f"{{knob}} must be a diffusers {role} folder (config.json + weights) or a pipeline folder with {role}/"
    return [WeightFile(what, f"{sub}/" if sub else "./", str(base), present, "", how, False, knob)]


@functools.cache
def _load(role: str, source: str, local_files_only: bool) -> torch.nn.Module:
    cls = {"vae": AutoencoderKL, "unet": UNet2DConditionModel}[role]
    if _is_hub_source(source):
        repo, sub = _split_hub(source)
    else:
        repo, sub = source, _local_subfolder(Path(source).expanduser(), role)
    try:
        kwargs: dict[str, Any] = {"subfolder": sub} if sub else {}
        model = cls.from_pretrained(repo, local_files_only=local_files_only, **kwargs)
        log.info("Loaded %s from %s (used instead of the backbone's own)", role, source)
        return model
    except (OSError, ValueError) as err:
        raise MissingWeightsError(
            f"{role} weights {source!r} not found (`hf download {repo}`, or set the method's {role}=own to use "
            f"the backbone's own). Cause: {type(err).__name__}"
        ) from None


def load_component(
    role: str, source: str, device: torch.device, dtype: torch.dtype, local_files_only: bool = False
) -> torch.nn.Module:
    """Load a VAE or UNet from `source` (memoised per process), frozen, in eval mode on `device`/`dtype`.

    Raises:
        MissingWeightsError: the weights are not there; one line saying what and how to get them.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    local_files_only = local_files_only or not downloads_allowed()
    return _load(role, source, local_files_only).to(device=device, dtype=dtype).eval().requires_grad_(False)


def with_component(
    backbone: Backbone, role: str, choice: str | None, paper_default: str, local_files_only: bool = False
) -> tuple[Backbone, str]:
    """`backbone` with its `role` component swapped per `choice`, and the label a method records in `info`.

    Returns the backbone itself and "own" when the choice resolves to the backbone's own component; otherwise
    a new `Backbone` (its `fingerprint`, hence every cache key, covers the swapped weights) and the source.
    """
    source = resolve_component(choice, paper_default, backbone.name)
    if source is None:
        return backbone, OWN
    model = load_component(role, source, backbone.device, backbone.dtype, local_files_only)
    return dataclasses.replace(backbone, **{role: model}), source
