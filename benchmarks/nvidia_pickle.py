"""Write a generator as an NVIDIA-style `.pkl` (stylegan2-ada-pytorch / stylegan3 `torch_utils.persistence`).

Each persistent module pickles as a call `torch_utils.persistence._reconstruct_persistent_obj(meta)` whose
`meta` holds `type`, `version`, `module_src`, `class_name` and the module's `__dict__` (parameters, buffers,
sub-modules, `_init_args`, `_init_kwargs`); the snapshot is a dict with 'G', 'D', 'G_ema',
'training_set_kwargs', 'augment_pipe'. The pickle names the official globals without importing them
(stand-in modules are registered only while writing). Our loader (methods/draggan/checkpoint.py) never runs
`module_src`; here it is a one-line placeholder, not NVIDIA's code. Used by benchmarks/rehearse_weights.py.
"""

from __future__ import annotations

import collections
import contextlib
import pickle
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from torch import nn

PERSISTENCE_VERSION = 6  # torch_utils/persistence.py `_version` in stylegan2-ada-pytorch and stylegan3
PLACEHOLDER_SRC = "# module source not included: written by benchmarks/nvidia_pickle.py (random weights)\n"
_MODULES = ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")


@contextlib.contextmanager
def official_stand_ins() -> Iterator[types.SimpleNamespace]:
    """Stand-ins for `torch_utils.persistence._reconstruct_persistent_obj` and `dnnlib.util.EasyDict`."""
    saved = {n: sys.modules.get(n) for n in _MODULES}
    mods = {n: types.ModuleType(n) for n in _MODULES}

    def _reconstruct_persistent_obj(meta: dict) -> None:  # pragma: no cover - never called when writing
        raise RuntimeError("stand-in for NVIDIA's reconstruct function: not loadable")

    class EasyDict(dict):
        pass

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    mods["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    mods["dnnlib.util"].EasyDict = EasyDict
    sys.modules.update(mods)
    try:
        yield types.SimpleNamespace(reconstruct=_reconstruct_persistent_obj, EasyDict=EasyDict)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class _Persistent:
    """Pickles one module (and, recursively, its children) as a persistence record."""

    def __init__(
        self, module: nn.Module, names: types.SimpleNamespace, init_kwargs: dict | None = None
    ) -> None:
        self.module, self.names, self.init_kwargs = module, names, init_kwargs or {}

    def __reduce__(self) -> tuple:
        state = dict(self.module.__dict__)
        if "weight_gain" in state:  # official: lr_multiplier / np.sqrt(in_features), a numpy float64
            state["weight_gain"] = np.float64(state["weight_gain"])
        state["_modules"] = collections.OrderedDict(
            (k, _Persistent(v, self.names)) for k, v in self.module._modules.items()
        )
        state.pop("init_kwargs", None)
        state["_init_args"], state["_init_kwargs"] = (), self.init_kwargs
        meta = dict(
            type="class",
            version=PERSISTENCE_VERSION,
            module_src=PLACEHOLDER_SRC,
            class_name=type(self.module).__name__,
            state=state,
        )
        return (self.names.reconstruct, (meta,))


def write_nvidia_pickle(generator: nn.Module, init_kwargs: dict, path: Path, dataset: str) -> None:
    """Write `generator` as 'G' and 'G_ema' (one object) of an NVIDIA training snapshot.

    Args:
        generator: our `methods.draggan.stylegan2.Generator` (official parameter names).
        init_kwargs: the Generator's official init kwargs as the pickle should carry them (flat synthesis
            kwargs for the stylegan3 repo's networks_stylegan2, nested `synthesis_kwargs` for stylegan2-ada).
        path: the .pkl to write.
        dataset: name recorded in `training_set_kwargs.path`.
    """
    with official_stand_ins() as names:
        kwargs = names.EasyDict(init_kwargs)
        kwargs["mapping_kwargs"] = names.EasyDict(init_kwargs.get("mapping_kwargs", {}))
        g = _Persistent(generator, names, kwargs)
        data = {
            "G": g,
            "D": None,  # the discriminator is not written (never read by DragGAN)
            "G_ema": g,
            "training_set_kwargs": names.EasyDict(path=f"{dataset}.zip", resolution=generator.img_resolution),
            "augment_pipe": None,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".pkl.tmp")
        tmp.write_bytes(pickle.dumps(data, protocol=3))
        tmp.replace(path)
