"""Loading StyleGAN2 weights without running code embedded in checkpoints (SPEC §5, last bullet).

NVIDIA's `.pkl` snapshots pickle each network through `torch_utils.persistence`: a call to
`_reconstruct_persistent_obj(meta)` whose `meta` carries the module *source code*, the class name and the
object's `__dict__` (parameters, buffers, sub-modules, init kwargs); a normal unpickle execs that source. A
restricted unpickler resolves only tensors, numpy scalars/arrays and plain containers, turns each persistent
object into an inert `PersistentRecord` (source kept as text, never executed) and anything else is refused.
Plain state dicts (`.pt`/`.pth` via `torch.load(weights_only=True)`, `.safetensors`) are also accepted.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

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
    """A generator and where it came from."""

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


def _build_and_load(state: dict[str, Tensor], init_kwargs: dict, source: str, meta: dict) -> LoadedGenerator:
    gen = build_generator(init_kwargs)
    missing, unexpected = gen.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{source}: state dict does not match the generator built from its init kwargs; "
            f"missing {missing[:5]}..., unexpected {unexpected[:5]}..."
        )
    return LoadedGenerator(gen.eval().requires_grad_(False), source, init_kwargs, meta)


def load_nvidia_pickle(path: str | Path, key: str = "G_ema") -> LoadedGenerator:
    """Read `key` (default `G_ema`) from an NVIDIA stylegan2(-ada)-pytorch `.pkl` without executing its code.

    Raises:
        UnsafeCheckpointError: the pickle asks for anything but tensors/containers/persistence records.
        KeyError: `key` is not in the pickle.
    """
    data = restricted_load(path)
    if not isinstance(data, dict) or key not in data:
        found = list(data) if isinstance(data, dict) else type(data)
        raise KeyError(f"{path}: expected a dict with {key!r}, found {found}")
    record = data[key]
    if not isinstance(record, PersistentRecord):
        raise UnsafeCheckpointError(f"{path}: {key} is {type(record)}, not an NVIDIA persistence record")
    init_kwargs = _plain(record.init_kwargs)
    meta = {
        "class_name": record.class_name,
        "persistence_version": _plain(record.version),
        "module_src_sha256": hashlib.sha256(record.module_src.encode()).hexdigest(),
    }
    logger.info("Read %s from %s (class %s; embedded source not executed)", key, path, record.class_name)
    return _build_and_load(flatten_record(record), init_kwargs, str(path), meta)


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
