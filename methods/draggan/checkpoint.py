"""Loading StyleGAN2 weights without running code embedded in checkpoints (protocol §5, last bullet).

NVIDIA's `.pkl` snapshots pickle each network through `torch_utils.persistence`: a call to
`_reconstruct_persistent_obj(meta)` whose `meta` carries the module *source code*, the class name and the
object's `__dict__` (parameters, buffers, sub-modules, init kwargs); a normal unpickle execs that source. A
restricted unpickler resolves only tensors, numpy scalars/arrays and plain containers, turns each persistent
object into an inert `PersistentRecord` (source kept as text, never executed) and anything else is refused.
Plain state dicts (`.pt`/`.pth` via `torch.load(weights_only=True)`, `.safetensors`) are also accepted.
StyleGAN-Human's full-body generator (a fork of stylegan2-ada-pytorch whose planes are R x R/2) is recognised
by its rectangular `synthesis.b4.const` and padded to square as DragGAN loads it (`stylegan2.SynthesisNetwork`).
Settings the init kwargs leave to class defaults (conv_clamp, fp16 blocks) are read from the pickled
sub-modules, and every pickled module setting is checked against the built generator. Verified against
NVIDIA's stylegan2-ada-pytorch / stylegan3 pickles (snapshots and `legacy.py` TF conversions):
tests/data/stylegan2_official/README.md.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import io
import json
import logging
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from methods.draggan.stylegan2 import Generator, build_generator

logger = logging.getLogger(__name__)

PERSISTENCE_MODULE = "torch_utils.persistence"  # where NVIDIA's reconstruct function lives
PERSISTENCE_FUNC = "_reconstruct_persistent_obj"
INIT_KWARGS_KEY = "init_kwargs"  # safetensors metadata key written by `save_safetensors`


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint pickle asked for a global outside the allow-list (it could run code)."""


@dataclass
class PersistentRecord:
    """Inert stand-in for an NVIDIA persistent object: class name, source text (not executed), state dict."""

    class_name: str
    module_src: str
    state: dict
    version: Any = None

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs", {}) or {})


class _AttrDict(dict):
    """Stand-in for `dnnlib.util.EasyDict` (a plain dict subclass); accepts pickle BUILD state."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.update(state)


def _reconstruct_record(meta: dict) -> PersistentRecord:
    meta = dict(meta)
    return PersistentRecord(
        class_name=str(meta.get("class_name")),
        module_src=str(meta.get("module_src", "")),
        state=dict(meta.get("state") or {}),
        version=meta.get("version"),
    )


def _load_storage_bytes(b: bytes) -> Any:
    """`torch.storage._load_from_bytes`, but through torch's weights-only unpickler."""
    return torch.load(io.BytesIO(b), weights_only=True, map_location="cpu")


def _numpy_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct, scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    return _reconstruct, scalar


def _allowed_globals() -> dict[tuple[str, str], Any]:
    reconstruct, scalar = _numpy_reconstruct()
    allowed: dict[tuple[str, str], Any] = {
        (PERSISTENCE_MODULE, PERSISTENCE_FUNC): _reconstruct_record,
        ("dnnlib.util", "EasyDict"): _AttrDict,
        ("dnnlib", "EasyDict"): _AttrDict,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = reconstruct
        allowed[(mod, "scalar")] = scalar
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the allow-listed globals above; everything else raises."""

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"refusing to unpickle global {module}.{name}: only tensors, numpy arrays, containers and "
                f"NVIDIA persistence records are allowed (the file could run code). Convert it to safetensors"
                f" on a trusted machine if you trust it."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError(f"refusing persistent id {pid!r} in a plain pickle")


def restricted_load(path: str | Path) -> Any:
    """Unpickle `path` with `RestrictedUnpickler`.

    Raises:
        UnsafeCheckpointError: the pickle needs a global outside the allow-list.
    """
    with open(path, "rb") as f:
        return RestrictedUnpickler(f).load()


def _as_tensor(x: Any) -> Tensor:
    return x.detach().clone() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))


def flatten_record(record: PersistentRecord, prefix: str = "") -> dict[str, Tensor]:
    """A record tree's parameters and persistent buffers as a flat state dict with dotted names."""
    state = record.state
    out: dict[str, Tensor] = {}
    skip = set(state.get("_non_persistent_buffers_set", set()) or set())
    for key in ("_parameters", "_buffers"):
        for name, value in (state.get(key) or {}).items():
            if value is not None and not (key == "_buffers" and name in skip):
                out[prefix + name] = _as_tensor(value)
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise UnsafeCheckpointError(
                f"sub-module {prefix + name} is not a persistence record: {type(child)}"
            )
        out.update(flatten_record(child, prefix + name + "."))
    return out


@dataclass
class LoadedGenerator:
    """A generator and where it came from (`init_kwargs`: as stored; `generator.init_kwargs`: as built)."""

    generator: Generator
    source: str
    init_kwargs: dict
    meta: dict = field(default_factory=dict)


def _plain(x: Any) -> Any:
    """EasyDicts/OrderedDicts/numpy scalars -> plain JSON-able Python."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def plane_from_state(init_kwargs: dict, state: dict[str, Tensor]) -> dict:
    """`init_kwargs` with `square=False` added when the weights are StyleGAN-Human's rectangle (its 4 x 2
    `synthesis.b4.const`) and the kwargs do not say: DragGAN's renderer passes `square` itself when it loads
    that pickle, so a released snapshot need not record it."""
    const = state.get("synthesis.b4.const")
    if const is None or const.shape[-1] == const.shape[-2]:
        return init_kwargs
    kw = copy.deepcopy(init_kwargs)
    target = kw["synthesis_kwargs"] if "synthesis_kwargs" in kw else kw
    if "square" not in kw and "square" not in target:
        target["square"] = False
    return kw


def _build_and_load(state: dict[str, Tensor], init_kwargs: dict, source: str, meta: dict) -> LoadedGenerator:
    gen = build_generator(plane_from_state(init_kwargs, state))
    missing, unexpected = gen.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{source}: state dict does not match the generator built from its init kwargs; "
            f"missing {missing[:5]}..., unexpected {unexpected[:5]}..."
        )
    return LoadedGenerator(gen.eval().requires_grad_(False), source, init_kwargs, meta)


#: Plain attributes that both the official modules and ours keep under the same name and meaning; each
#: pickled sub-module's values are compared with the built generator's (see `check_against_records`).
CHECKED_ATTRIBUTES = (
    "z_dim", "c_dim", "w_dim", "num_ws", "img_resolution", "img_channels", "num_layers", "resolution",
    "in_channels", "up", "use_noise", "activation", "conv_clamp", "is_last", "use_fp16", "architecture",
    "num_conv", "num_torgb", "block_resolutions", "weight_gain", "bias_gain", "square",
)  # fmt: skip


def _records(record: PersistentRecord, prefix: str = "") -> dict[str, PersistentRecord]:
    """Every record of a tree by dotted module path ('' = the root)."""
    out = {prefix.rstrip("."): record}
    for name, child in (record.state.get("_modules") or {}).items():
        if isinstance(child, PersistentRecord):
            out.update(_records(child, f"{prefix}{name}."))
    return out


def synthesis_settings_from_records(record: PersistentRecord) -> dict:
    """`conv_clamp` and `num_fp16_res` as the pickled synthesis sub-modules actually used them.

    The official init kwargs may leave both to class defaults that differ between code bases; each pickled
    SynthesisLayer/ToRGBLayer keeps its `conv_clamp` and each block its `use_fp16`, so the records settle it.

    Raises:
        ValueError: the records disagree among themselves (not a StyleGAN2 generator we understand).
    """
    recs = {p: r for p, r in _records(record).items() if p.startswith("synthesis.b")}
    clamps = {r.state["conv_clamp"] for r in recs.values() if "conv_clamp" in r.state}
    blocks = [r for p, r in recs.items() if p.count(".") == 1]
    if len(clamps) != 1 or not blocks or any("use_fp16" not in b.state for b in blocks):
        raise ValueError(
            f"pickled synthesis blocks do not state one conv_clamp and use_fp16 per block (found clamps "
            f"{sorted(map(str, clamps))}); not a stylegan2(-ada)-pytorch / stylegan3 StyleGAN2 Generator"
        )
    return {"conv_clamp": clamps.pop(), "num_fp16_res": sum(bool(b.state["use_fp16"]) for b in blocks)}


def effective_init_kwargs(init_kwargs: dict, settings: dict) -> dict:
    """`init_kwargs` plus the `settings` they leave out (`synthesis_settings_from_records`), made explicit.

    Explicit init kwargs are kept; `check_against_records` then rejects any that contradict the records.
    """
    kw = copy.deepcopy(init_kwargs)
    target = kw["synthesis_kwargs"] if "synthesis_kwargs" in kw else kw
    for name, value in settings.items():
        target.setdefault(name, value)
    return kw


def check_against_records(generator: nn.Module, record: PersistentRecord) -> None:
    """Compare every `CHECKED_ATTRIBUTES` value of the pickled modules with the built generator's.

    Raises:
        ValueError: a sub-module is missing or a setting differs (the maths would differ).
    """
    ours = dict(generator.named_modules())
    for path, rec in _records(record).items():
        if path not in ours:
            if rec.state.get("_parameters") or rec.state.get("_buffers") or rec.state.get("_modules"):
                raise ValueError(f"pickled module {path or '<root>'} ({rec.class_name}) has no counterpart")
            continue
        for name in CHECKED_ATTRIBUTES:
            if name not in rec.state or not hasattr(ours[path], name):
                continue
            theirs, mine = _plain(rec.state[name]), getattr(ours[path], name)
            same = (
                math.isclose(theirs, mine, rel_tol=1e-12)
                if isinstance(theirs, float) and isinstance(mine, float)
                else theirs == mine
            )
            if not same:
                raise ValueError(
                    f"{path or '<root>'}.{name}: pickled {theirs!r} but built {mine!r}; loading would change "
                    f"the maths"
                )


def load_nvidia_pickle(path: str | Path, key: str = "G_ema") -> LoadedGenerator:
    """Read `key` (default `G_ema`) from an NVIDIA stylegan2(-ada)-pytorch or stylegan3 `.pkl`, never run it.

    Settings the init kwargs leave to class defaults come from the pickled modules
    (`synthesis_settings_from_records`), and the built generator is checked against them
    (`check_against_records`).

    Raises:
        UnsafeCheckpointError: the pickle asks for anything but tensors/containers/persistence records.
        KeyError: `key` is not in the pickle.
        ValueError: the pickled modules do not fit the generator built from their init kwargs.
    """
    data = restricted_load(path)
    if not isinstance(data, dict) or key not in data:
        found = list(data) if isinstance(data, dict) else type(data)
        raise KeyError(f"{path}: expected a dict with {key!r}, found {found}")
    record = data[key]
    if not isinstance(record, PersistentRecord):
        raise UnsafeCheckpointError(f"{path}: {key} is {type(record)}, not an NVIDIA persistence record")
    init_kwargs = _plain(record.init_kwargs)
    settings = synthesis_settings_from_records(record)
    meta = {
        "class_name": record.class_name,
        "persistence_version": _plain(record.version),
        "module_src_sha256": hashlib.sha256(record.module_src.encode()).hexdigest(),
        "settings_from_records": settings,
    }
    logger.info("Read %s from %s (class %s; embedded source not executed)", key, path, record.class_name)
    loaded = _build_and_load(
        flatten_record(record), effective_init_kwargs(init_kwargs, settings), str(path), meta
    )
    check_against_records(loaded.generator, record)
    loaded.init_kwargs = init_kwargs
    return loaded


def infer_init_kwargs(state: dict[str, Tensor]) -> dict:
    """Generator init kwargs implied by the shapes of an official-named state dict (no conv_clamp/fp16)."""
    n_fc = sum(1 for k in state if k.startswith("mapping.fc") and k.endswith(".weight"))
    c_dim = int(state["mapping.embed.weight"].shape[1]) if "mapping.embed.weight" in state else 0
    embed = int(state["mapping.embed.weight"].shape[0]) if c_dim else 0
    z_dim = int(state["mapping.fc0.weight"].shape[1]) - embed
    w_dim = int(state[f"mapping.fc{n_fc - 1}.weight"].shape[0])
    res = sorted(
        int(k.split(".")[1][1:]) for k in state if k.startswith("synthesis.b") and k.endswith("conv1.weight")
    )
    channels = {r: int(state[f"synthesis.b{r}.conv1.weight"].shape[0]) for r in res}
    channel_max = max(channels.values())
    below = [r for r in res if channels[r] < channel_max]
    channel_base = channels[below[0]] * below[0] if below else channel_max * res[-1]
    img_channels = int(state[f"synthesis.b{res[-1]}.torgb.weight"].shape[0])
    return {
        "z_dim": z_dim,
        "c_dim": c_dim,
        "w_dim": w_dim,
        "img_resolution": res[-1],
        "img_channels": img_channels,
        "mapping_kwargs": {"num_layers": n_fc},
        "synthesis_kwargs": {"channel_base": channel_base, "channel_max": channel_max},
    }


def save_safetensors(generator: Generator, path: str | Path) -> None:
    """Write a generator as safetensors with its init kwargs in the metadata (a safe exchange format)."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in generator.state_dict().items()}
    save_file(state, str(path), metadata={INIT_KWARGS_KEY: json.dumps(generator.init_kwargs)})


def load_state_dict_file(path: str | Path) -> LoadedGenerator:
    """Load a `.safetensors`/`.pt`/`.pth` state dict (official names); init kwargs from metadata or shapes."""
    path = Path(path)
    init_kwargs = None
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
        if INIT_KWARGS_KEY in meta:
            init_kwargs = json.loads(meta[INIT_KWARGS_KEY])
    else:
        obj = torch.load(path, weights_only=True, map_location="cpu")
        state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
        init_kwargs = obj.get(INIT_KWARGS_KEY) if isinstance(obj, dict) else None
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected a state dict, found {type(obj)}")
    init_kwargs = init_kwargs or infer_init_kwargs(state)
    return _build_and_load(state, init_kwargs, str(path), {})


def load_generator(path: str | Path) -> LoadedGenerator:
    """Load a generator from `.pkl` (NVIDIA, restricted), `.safetensors`, `.pt` or `.pth`.

    Raises:
        FileNotFoundError: the file does not exist (message says how to get the official checkpoints).
        UnsafeCheckpointError: a pickle that asks for anything outside the allow-list.
        ValueError: unknown suffix or a state dict that does not fit.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"StyleGAN2 checkpoint not found: {path}. Download the official NVIDIA/DragGAN .pkl files "
            f"(DragGAN's scripts/download_model.sh) into $DRAGGAN_CKPT_DIR, or use method=draggan_tiny."
        )
    if path.suffix == ".pkl":
        return load_nvidia_pickle(path)
    if path.suffix in (".safetensors", ".pt", ".pth"):
        return load_state_dict_file(path)
    raise ValueError(
        f"unknown checkpoint suffix {path.suffix!r} for {path}; expected .pkl|.safetensors|.pt|.pth"
    )
