"""Safe loading of StyleGAN2 checkpoints (protocol §5): official-shaped NVIDIA pickles without running their code,
malicious pickles refused, plain state dicts."""

from __future__ import annotations

import collections
import json
import os
import pickle
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from benchmarks.nvidia_pickle import official_stand_ins  # stand-ins whose reconstruct must never run
from methods.draggan.checkpoint import (
    PersistentRecord,
    RestrictedUnpickler,
    UnsafeCheckpointError,
    check_against_records,
    effective_init_kwargs,
    flatten_record,
    infer_init_kwargs,
    load_generator,
    save_safetensors,
    synthesis_settings_from_records,
)
from methods.draggan.stylegan2 import Generator, build_generator, build_tiny_generator

PERSISTENCE_VERSION = 6  # torch_utils/persistence.py `_version` in stylegan2-ada-pytorch
OFFICIAL = Path(__file__).parent / "data" / "stylegan2_official"  # facts recorded from NVIDIA's code (README)


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
    with official_stand_ins() as fake:
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


# --- Pickles with the structure NVIDIA's training loops write (recorded in tests/data/stylegan2_official) ---


class _Record:
    """Pickles as a `@persistence.persistent_class` object does: `_reconstruct_persistent_obj(meta)`."""

    def __init__(self, reconstruct, class_name: str, version: int, src: str, state: dict) -> None:
        self.reconstruct, self.class_name, self.version, self.src, self.state = (
            reconstruct,
            class_name,
            version,
            src,
            state,
        )

    def __reduce__(self):
        meta = dict(
            type="class",
            version=self.version,
            module_src=self.src,
            class_name=self.class_name,
            state=self.state,
        )
        return (self.reconstruct, (meta,))


def _from_skeleton(node, make_record, tensor_for, easydict=dict, prefix: str = ""):
    """Rebuild an object tree from a recorded skeleton (see the data README): records via `make_record`,
    tensor `prefix+name` via `tensor_for(name, spec)`, containers and numpy scalars as recorded."""

    def rec(n, p=prefix):
        return _from_skeleton(n, make_record, tensor_for, easydict, p)

    if isinstance(node, list):
        return [rec(v) for v in node]
    if not isinstance(node, dict):
        return node
    if "__record__" in node:
        state = {}
        for key, value in node["state"]["__dict__"]:
            if key == "_modules":
                state[key] = {n: rec(c, f"{prefix}{n}.") for n, c in value["__dict__"]}
            elif key in ("_parameters", "_buffers"):
                kind = collections.OrderedDict if "__odict__" in value else dict
                pairs = value.get("__odict__", value.get("__dict__"))
                state[key] = kind((n, tensor_for(prefix + n, spec)) for n, spec in pairs)
            else:
                state[key] = rec(value)
        return make_record(node["__record__"], node["version"], state)
    if "__tensor__" in node:
        return tensor_for(prefix, node)
    kinds = {"__dict__": dict, "__odict__": collections.OrderedDict, "__easydict__": easydict}
    for tag, kind in kinds.items():
        if tag in node:
            return kind((k, rec(v)) for k, v in node[tag])
    if "__set__" in node:
        return {rec(v) for v in node["__set__"]}
    if "__tuple__" in node:
        return tuple(rec(v) for v in node["__tuple__"])
    if "__numpy__" in node:
        return np.dtype(node["__numpy__"]).type(node["value"])
    raise AssertionError(f"unknown skeleton node {sorted(node)}")


def _plain_kwargs(node):
    """A recorded init-kwargs skeleton as plain dicts (what `LoadedGenerator.init_kwargs` reports)."""
    return _from_skeleton(node, None, None)


def _tensor_maker(weights: dict[str, torch.Tensor]):
    def make(name: str, spec: dict) -> torch.Tensor:
        t = weights.get(name)
        t = torch.zeros(spec["shape"], dtype=getattr(torch, spec["__tensor__"])) if t is None else t.clone()
        assert list(t.shape) == spec["shape"], name
        return torch.nn.Parameter(t, requires_grad=spec["requires_grad"]) if spec["parameter"] else t

    return make


def _globals_of(path: Path) -> list[list[str]]:
    seen: set[tuple[str, str]] = set()

    class Recording(RestrictedUnpickler):
        def find_class(self, module: str, name: str):
            seen.add((module, name))
            return super().find_class(module, name)

    with open(path, "rb") as f:
        Recording(f).load()
    return sorted([m, n] for m, n in seen)


def _numpy1_spelling(names: list[list[str]]) -> list[list[str]]:
    """numpy 2 pickles `numpy._core.multiarray`, numpy 1 `numpy.core.multiarray`: compare either."""
    return sorted([m.replace("numpy._core", "numpy.core"), n] for m, n in names)


@pytest.mark.parametrize(
    "tag",
    ["tiny64_ada", "tiny64_sg3", "tiny64_tfconv_ada", "tiny64_tfconv_sg3"],
    ids=["ada_snapshot", "stylegan3_snapshot", "ada_legacy_tf_conversion", "stylegan3_legacy_tf_conversion"],
)
def test_pickle_with_recorded_official_structure_loads_without_running_it(tmp_path: Path, tag: str) -> None:
    """Rebuilds an NVIDIA pickle (a training snapshot: G, D, G_ema, augment_pipe, training_set_kwargs; or what
    `legacy.py` writes when converting a TF pickle; every module a persistence record with embedded source)
    from the recorded skeleton and the official weights, then loads it: the same globals as the official file,
    never executed, same numbers as NVIDIA's generator."""
    facts = json.loads((OFFICIAL / f"{tag}.json").read_text())
    weights = load_file(OFFICIAL / "tiny64_G_ema.safetensors")
    sentinel = tmp_path / "pwned.txt"
    src = f"import pathlib\npathlib.Path({str(sentinel)!r}).write_text('pwned')\n"  # runs if ever exec'd
    with official_stand_ins() as fake:

        def make_record(class_name: str, version: int, state: dict) -> _Record:
            return _Record(fake.reconstruct, class_name, version, src, state)

        data = {}
        skeletons = {**facts["pickle_skeleton"], "G_ema": facts["G_ema_skeleton"]}
        for key in facts["top_level_keys"]:  # G and G_ema hold the official weights, D/augment_pipe zeros
            tensors = weights if key in ("G", "G_ema") else {}
            data[key] = _from_skeleton(skeletons[key], make_record, _tensor_maker(tensors), fake.EasyDict)
        path = tmp_path / "network-snapshot-000000.pkl"
        path.write_bytes(pickle.dumps(data))
    # Every global the official file asks for, no more.
    assert _numpy1_spelling(_globals_of(path)) == _numpy1_spelling(facts["pickle_globals"])

    loaded = load_generator(path)
    assert not sentinel.exists()
    assert (
        loaded.init_kwargs == _plain_kwargs(facts["init_kwargs"]["G_ema"]) == facts["loaded"]["init_kwargs"]
    )
    assert loaded.meta["settings_from_records"] == {"conv_clamp": 256, "num_fp16_res": 4}
    if tag == "tiny64_sg3":  # the newer layout: flat kwargs + fused_modconv_default, clamp/fp16 from defaults
        assert loaded.init_kwargs["fused_modconv_default"] == "inference_only"
        assert "conv_clamp" not in loaded.init_kwargs and "synthesis_kwargs" not in loaded.init_kwargs
    if "tfconv" in tag:  # the converter spells out every layer/mapping kwarg and sets the TF clamp/fp16
        syn = loaded.init_kwargs.get("synthesis_kwargs", loaded.init_kwargs)
        assert (syn["use_noise"], syn["activation"], syn["resample_filter"]) == (True, "lrelu", [1, 3, 3, 1])
        assert loaded.init_kwargs["mapping_kwargs"]["w_avg_beta"] == 0.995
        assert facts["top_level_types"]["augment_pipe"] == "NoneType"
    expected = load_file(OFFICIAL / "tiny64_expected.safetensors")
    img, _ = loaded.generator(expected["z"], noise_mode="const")
    assert (img - expected["natural/img"]).abs().max() <= 1e-4  # measured 5.0e-6


def _record_tree(skeleton: dict) -> PersistentRecord:
    """A recorded G_ema skeleton as the loader's inert records, tensors on the meta device (no weights)."""

    def make_record(class_name: str, version: int, state: dict) -> PersistentRecord:
        return PersistentRecord(class_name=class_name, module_src="", state=state, version=version)

    def meta_tensor(name: str, spec: dict) -> torch.Tensor:
        return torch.empty(spec["shape"], dtype=getattr(torch, spec["__tensor__"]), device="meta")

    return _from_skeleton(skeleton, make_record, meta_tensor)


@pytest.mark.parametrize(
    "tag", ["ffhq512_ada", "afhqcat512_ada", "ffhq512_sg3", "ffhq512_tfconv_ada", "ffhq512_tfconv_sg3"]
)
def test_full_size_official_generators_build_with_the_recorded_structure(tag: str) -> None:
    """FFHQ-512 / AFHQ-512 (ada `paper512`), stylegan3-repo `--cfg=stylegan2` and TF-converted (`legacy.py`)
    G_ema as NVIDIA's code pickles them: our generator built from their init kwargs has every recorded
    parameter/buffer with its shape, in order, and every pickled module setting (clamps, fp16 blocks, gains,
    resolutions) agrees."""
    facts = json.loads((OFFICIAL / f"{tag}.json").read_text())
    record = _record_tree(facts["G_ema_skeleton"])
    init_kwargs = _plain_kwargs(facts["init_kwargs"]["G_ema"])
    assert init_kwargs["img_resolution"] == 512 and init_kwargs["z_dim"] == init_kwargs["w_dim"] == 512
    settings = synthesis_settings_from_records(record)
    assert settings == {"conv_clamp": 256, "num_fp16_res": 4}
    with torch.device("meta"):
        g = build_generator(effective_init_kwargs(init_kwargs, settings))
    check_against_records(g, record)
    ours = {k: list(v.shape) for k, v in g.state_dict().items()}
    theirs = {k: list(v.shape) for k, v in flatten_record(record).items()}
    assert list(ours.items()) == list(theirs.items()) == list(facts["G_ema_state_dict"].items())
    assert g.num_ws == 16 and len(ours) == 17 + 13 + 7 * 19


def test_records_that_contradict_the_init_kwargs_are_refused() -> None:
    facts = json.loads((OFFICIAL / "tiny64_sg3.json").read_text())
    record = _record_tree(facts["G_ema_skeleton"])
    init_kwargs = _plain_kwargs(facts["init_kwargs"]["G_ema"])
    settings = synthesis_settings_from_records(record)
    with torch.device("meta"):  # an explicit conv_clamp=None against layers pickled with 256
        g = build_generator(effective_init_kwargs({**init_kwargs, "conv_clamp": None}, settings))
    with pytest.raises(ValueError, match=r"synthesis\.b4\.conv1\.conv_clamp: pickled 256 but built None"):
        check_against_records(g, record)
    layer = record.state["_modules"]["synthesis"].state["_modules"]["b8"].state["_modules"]["conv0"]
    layer.state["conv_clamp"] = 128  # blocks that disagree among themselves
    with pytest.raises(ValueError, match="do not state one conv_clamp"):
        synthesis_settings_from_records(record)


# --- StyleGAN-Human (DragGAN's full-body domain): an R x R/2 generator, padded to R x R as DragGAN loads it ---


@pytest.mark.parametrize("square_in_kwargs", [True, False], ids=["train_py_kwargs", "kwargs_without_square"])
def test_stylegan_human_snapshot_loads_and_matches_draggans_padded_generator(
    tmp_path: Path, square_in_kwargs: bool
) -> None:
    """A StyleGAN-Human training snapshot rebuilt from the structure its own code pickles (DragGAN's copy,
    tests/data/stylegan2_official/README.md) loads without running it; the rectangle is recognised from its
    weights whether or not the init kwargs say `square` (DragGAN's renderer passes it itself, so a released
    file need not), and image and features equal DragGAN's `square=False, padding=True` generator."""
    facts = json.loads((OFFICIAL / "tiny64_human.json").read_text())
    weights = load_file(OFFICIAL / "tiny64_human_G_ema.safetensors")
    expected = load_file(OFFICIAL / "tiny64_human_expected.safetensors")
    skeleton = facts["G_ema_skeleton"]
    if not square_in_kwargs:
        for key, value in skeleton["state"]["__dict__"]:
            if key == "_init_kwargs":
                value["__dict__"] = [kv for kv in value["__dict__"] if kv[0] != "square"]
    sentinel = tmp_path / "pwned.txt"
    src = f"import pathlib\npathlib.Path({str(sentinel)!r}).write_text('pwned')\n"
    with official_stand_ins() as fake:

        def make_record(class_name: str, version: int, state: dict) -> _Record:
            return _Record(fake.reconstruct, class_name, version, src, state)

        skeletons = {**facts["pickle_skeleton"], "G_ema": skeleton}
        data = {
            key: _from_skeleton(
                skeletons[key], make_record, _tensor_maker(weights if key in ("G", "G_ema") else {}), fake.EasyDict
            )
            for key in facts["top_level_keys"]
        }
        path = tmp_path / "stylegan_human_v2_64.pkl"
        path.write_bytes(pickle.dumps(data))
    assert _numpy1_spelling(_globals_of(path)) == _numpy1_spelling(facts["pickle_globals"])
    g = load_generator(path).generator
    assert not sentinel.exists()
    assert g.synthesis.square is False and g.synthesis.b4.const.shape[-2:] == (4, 2)
    assert facts["shapes"] == {"img": [2, 3, 64, 64], "img_unpadded": [2, 3, 64, 32]}
    ws = g.mapping(expected["z"])
    img, feats = g.synthesis(ws, noise_mode="const")
    assert (ws - expected["natural/ws"]).abs().max() <= 1e-5  # measured bit-identical
    assert (img - expected["natural/img"]).abs().max() <= 1e-4  # measured 3.9e-6 (|img| <= 6.7)
    assert torch.equal(img[..., :16], torch.ones_like(img[..., :16]))  # DragGAN pads with white ...
    assert (img[..., 16:48] - expected["natural/img_unpadded"]).abs().max() <= 1e-4  # ... around the rectangle
    for f in feats:  # every block's output, padded with 0 (what DragGAN tracks and supervises on)
        assert f.shape[-2] == f.shape[-1]
        assert (f[:1] - expected[f"natural/feat_b{f.shape[-2]}"]).abs().max() <= 1e-4  # measured <= 3.3e-6
    img_psi, _ = g.synthesis(g.mapping(expected["z"], truncation_psi=0.7), noise_mode="const")
    assert (img_psi - expected["natural/img_psi07"]).abs().max() <= 1e-4  # measured 3.1e-6


def test_rectangle_generators_round_trip_as_state_dicts(tmp_path: Path) -> None:
    """A state dict alone (safetensors without kwargs, .pt) says it is a rectangle through its 4 x 2 const."""
    g = build_tiny_generator(resolution=32, channel_base=256, channel_max=16, seed=2, square=False)
    layer = g.synthesis.b32.conv1
    assert layer.noise_const.shape == layer.noise_shape == (32, 16)
    torch.save(g.state_dict(), tmp_path / "human.pt")
    _assert_same_generator(load_generator(tmp_path / "human.pt").generator, g)
    assert infer_init_kwargs(g.state_dict())["img_resolution"] == 32
