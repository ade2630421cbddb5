"""Safe loading of StyleGAN2 checkpoints (SPEC §5): official-shaped NVIDIA pickles without running their code,
malicious pickles refused, plain state dicts."""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from methods.draggan.checkpoint import (
    UnsafeCheckpointError,
    infer_init_kwargs,
    load_generator,
    save_safetensors,
)
from methods.draggan.stylegan2 import Generator, build_tiny_generator

PERSISTENCE_VERSION = 6  # torch_utils/persistence.py `_version` in stylegan2-ada-pytorch


@contextlib.contextmanager
def _fake_nvidia_modules() -> Iterator[types.SimpleNamespace]:
    """Register stand-ins for `torch_utils.persistence` and `dnnlib.util` so pickle writes their names.

    The reconstruct function would exec `module_src` if it were the real one; our loader must never call it.
    """
    names = ["torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"]
    saved = {n: sys.modules.get(n) for n in names}
    mods = {n: types.ModuleType(n) for n in names}

    def _reconstruct_persistent_obj(meta):  # pragma: no cover - must never run
        raise AssertionError("the real reconstruct function was called")

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
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


class _Persistent:
    """Pickles like a `@persistence.persistent_class` module: reconstruct(meta) with source + __dict__."""

    def __init__(
        self, module: torch.nn.Module, fake: types.SimpleNamespace, src: str, init_kwargs=None
    ) -> None:
        self.module, self.fake, self.src, self.init_kwargs = module, fake, src, init_kwargs

    def __reduce__(self):
        state = dict(self.module.__dict__)
        if "weight_gain" in state:  # official: lr_multiplier / np.sqrt(in_features) -> a numpy float64
            state["weight_gain"] = np.float64(state["weight_gain"])
        state["_modules"] = collections.OrderedDict(
            (k, _Persistent(v, self.fake, self.src)) for k, v in self.module._modules.items()
        )
        state["_init_args"] = ()
        state["_init_kwargs"] = self.init_kwargs or {}
        state.pop("init_kwargs", None)
        meta = dict(
            type="class",
            version=PERSISTENCE_VERSION,
            module_src=self.src,
            class_name=type(self.module).__name__,
            state=state,
        )
        return (self.fake.reconstruct, (meta,))


def write_official_pickle(g: Generator, path: Path, sentinel: Path, flat: bool = False) -> None:
    """Write `{'G': ..., 'G_ema': ..., 'training_set_kwargs': EasyDict}` as NVIDIA's training loop does.

    flat=False: stylegan2-ada-pytorch's `synthesis_kwargs={...}`; flat=True: the stylegan3 repo's
    networks_stylegan2 (DragGAN's checkpoints), whose Generator takes the synthesis kwargs as `**kwargs`.
    """
    src = f"import pathlib\npathlib.Path({str(sentinel)!r}).write_text('pwned')\n"  # runs if ever exec'd
    with _fake_nvidia_modules() as fake:
        kw = dict(g.init_kwargs)
        kw["mapping_kwargs"] = fake.EasyDict(kw["mapping_kwargs"])
        syn = fake.EasyDict(kw.pop("synthesis_kwargs"), num_fp16_res=0, conv_clamp=None)
        if flat:
            kw.update(syn)
        else:
            kw["synthesis_kwargs"] = syn
        data = {
            "G": _Persistent(g, fake, src, kw),
            "G_ema": _Persistent(g, fake, src, kw),
            "training_set_kwargs": fake.EasyDict(path="ffhq.zip", resolution=g.img_resolution),
        }
        path.write_bytes(pickle.dumps(data, protocol=3))


@pytest.fixture(scope="module")
def tiny() -> Generator:
    return build_tiny_generator(resolution=32, channel_base=256, channel_max=16, seed=1)


def _assert_same_generator(a: Generator, b: Generator) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    z = torch.randn(1, a.z_dim, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a(z)[0], b(z)[0])


@pytest.mark.parametrize("flat", [False, True], ids=["ada_layout", "stylegan3_repo_layout"])
def test_official_shaped_pickle_round_trip_without_running_embedded_code(
    tiny: Generator, tmp_path: Path, flat: bool
) -> None:
    sentinel = tmp_path / "pwned.txt"
    path = tmp_path / "network-snapshot.pkl"
    write_official_pickle(tiny, path, sentinel, flat=flat)
    raw = path.read_bytes()
    assert b"torch_utils.persistence" in raw and b"_reconstruct_persistent_obj" in raw  # the official shape
    assert b"torch.storage" in raw and b"dnnlib.util" in raw
    loaded = load_generator(path)
    assert not sentinel.exists()  # the embedded source was never executed
    _assert_same_generator(loaded.generator, tiny)
    syn = loaded.init_kwargs if flat else loaded.init_kwargs["synthesis_kwargs"]
    assert (syn["channel_base"], syn["num_fp16_res"], syn["conv_clamp"]) == (256, 0, None)
    assert loaded.init_kwargs["mapping_kwargs"] == {"num_layers": 2}
    assert (
        loaded.meta["class_name"] == "Generator" and loaded.meta["persistence_version"] == PERSISTENCE_VERSION
    )


class _System:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _Eval:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


@pytest.mark.parametrize("kind", ["system", "eval", "nested"])
def test_malicious_pickle_is_refused_and_does_not_run(tmp_path: Path, kind: str) -> None:
    sentinel = tmp_path / "pwned.txt"
    cmd = f"touch {sentinel}"
    payload = {
        "system": {"G_ema": _System(cmd)},
        "eval": {"G_ema": _Eval(f"open({str(sentinel)!r}, 'w').write('x')")},
        "nested": {"G_ema": {"_parameters": collections.OrderedDict(w=_System(cmd))}},
    }[kind]
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=3))
    with pytest.raises(
        UnsafeCheckpointError, match=r"refusing to unpickle global (posix|builtins)\.(system|eval)"
    ):
        load_generator(path)
    assert not sentinel.exists()


def test_torch_module_pickled_normally_is_refused(tiny: Generator, tmp_path: Path) -> None:
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"G_ema": tiny}))  # a class global: could be anything
    with pytest.raises(UnsafeCheckpointError, match="methods.draggan.stylegan2.Generator"):
        load_generator(path)


def test_safetensors_and_pt_state_dicts(tiny: Generator, tmp_path: Path) -> None:
    save_safetensors(tiny, tmp_path / "g.safetensors")
    _assert_same_generator(load_generator(tmp_path / "g.safetensors").generator, tiny)
    torch.save(tiny.state_dict(), tmp_path / "g.pt")  # no init kwargs: inferred from shapes
    loaded = load_generator(tmp_path / "g.pt")
    _assert_same_generator(loaded.generator, tiny)
    assert infer_init_kwargs(tiny.state_dict()) == {**tiny.init_kwargs, "c_dim": 0}


def test_missing_checkpoint_fails_with_one_clear_message(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="DRAGGAN_CKPT_DIR"):
        load_generator(tmp_path / "stylegan2-ffhq-512x512.pkl")
