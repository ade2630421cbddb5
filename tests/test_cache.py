"""Content-addressed cache: round trip, key sensitivity, corruption detection, concurrent writers."""

from __future__ import annotations

import importlib
import multiprocessing as mp
import sys
import time

import numpy as np
import pytest
import torch

import dragbench.cache as cache_module
from dragbench.cache import Cache, cache_key, code_version, producer_modules

P = (__name__,)  # entries made by this test module's code


def test_round_trip_and_hit_counting(tmp_path):
    cache = Cache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"z": torch.arange(6, dtype=torch.float32).reshape(2, 3)}

    first = cache.get_or_compute("inversion", {"t": 35, "prompt": "a dog"}, compute)
    second = cache.get_or_compute("inversion", {"prompt": "a dog", "t": 35}, compute)  # key order irrelevant
    assert len(calls) == 1
    assert torch.equal(first["z"], second["z"])
    assert cache.stats["inversion/miss"] == 1 and cache.stats["inversion/hit"] == 1


def test_key_depends_on_exactly_the_inputs():
    image = np.zeros((4, 4, 3), np.uint8)
    other = image.copy()
    other[0, 0, 0] = 1
    assert cache_key("lora", {"image": image}, P) == cache_key("lora", {"image": image.copy()}, P)
    assert cache_key("lora", {"image": image}, P) != cache_key("lora", {"image": other}, P)
    assert cache_key("lora", {"step": 20}, P) != cache_key("lora", {"step": 40}, P)
    assert cache_key("lora", {"step": 20}, P) != cache_key("inversion", {"step": 20}, P)


def test_corrupt_entry_is_dropped_and_recomputed(tmp_path, caplog):
    cache = Cache(tmp_path)
    inputs = {"k": 1}
    cache.put("x", inputs, {"a": torch.ones(3)}, producers=P)
    path = cache.path("x", inputs, producers=P)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF  # flip bits in the payload
    path.write_bytes(bytes(blob))
    assert cache.get("x", inputs, producers=P) is None
    assert "corrupt" in caplog.text
    assert not path.exists()
    out = cache.get_or_compute("x", inputs, lambda: {"a": torch.full((3,), 2.0)})
    assert torch.equal(out["a"], torch.full((3,), 2.0))


def test_disabled_cache_always_computes(tmp_path):
    cache = Cache(tmp_path, enabled=False)
    n = []
    for _ in range(2):
        cache.get_or_compute("x", {}, lambda: n.append(1) or {"a": torch.zeros(1)})
    assert len(n) == 2
    assert not any(tmp_path.iterdir())


def _writer(root: str, value: float, rounds: int) -> None:
    cache = Cache(root)
    for _ in range(rounds):
        cache.put("shared", {"k": "same"}, {"a": torch.full((1000,), value)}, producers=P)


def test_concurrent_writers_never_leave_a_torn_entry(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), float(i), 20)) for i in range(3)]
    for p in procs:
        p.start()
    reader = Cache(tmp_path)
    seen = 0
    while any(p.is_alive() for p in procs):
        got = reader.get("shared", {"k": "same"}, producers=P)
        if got is not None:
            seen += 1
            assert torch.unique(got["a"]).numel() == 1  # one writer's whole content, never a mix
    for p in procs:
        p.join()
        assert p.exitcode == 0
    final = reader.get("shared", {"k": "same"}, producers=P)
    assert final is not None and final["a"][0].item() in (0.0, 1.0, 2.0)
    assert reader.stats["shared/corrupt"] == 0
    assert not list(tmp_path.rglob(".tmp-*"))


def _locked_compute(root: str, log_path: str, start_path: str) -> None:
    from pathlib import Path

    while not Path(start_path).exists():  # start both processes' get_or_compute together
        pass

    def compute() -> dict[str, torch.Tensor]:
        with open(log_path, "a") as f:
            f.write("computed\n")
        import time

        time.sleep(1.0)  # long enough that the other process arrives while this one computes
        return {"a": torch.arange(5.0)}

    out = Cache(root).get_or_compute("locked", {"k": 1}, compute)
    assert torch.equal(out["a"], torch.arange(5.0))


def test_lock_serialises_two_processes_computing_the_same_key(tmp_path):
    ctx = mp.get_context("spawn")
    log_path, start = tmp_path / "computations.log", tmp_path / "go"
    procs = [
        ctx.Process(target=_locked_compute, args=(str(tmp_path / "c"), str(log_path), str(start)))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    start.touch()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert log_path.read_text().splitlines() == ["computed"]  # the compute function ran exactly once
    assert len(list((tmp_path / "c" / "locked").rglob("*.lock"))) == 1


def test_lock_is_reentrant_and_a_noop_when_disabled(tmp_path):
    cache = Cache(tmp_path)
    inner = []
    with cache.lock("x", {"k": 1}, producers=P):
        # the same key again in the same thread (nested get_or_compute) must not deadlock
        cache.get_or_compute("x", {"k": 1}, lambda: inner.append(1) or {"a": torch.ones(1)})
    assert inner == [1] and cache.stats["x/miss"] == 1
    with Cache(tmp_path / "off", enabled=False).lock("x", {"k": 1}, producers=P):
        pass
    assert not (tmp_path / "off").exists()


def _counting(calls: list) -> callable:
    def compute() -> dict[str, torch.Tensor]:
        calls.append(1)
        return {"a": torch.ones(2)}

    return compute


def test_changed_producer_source_or_library_version_misses(tmp_path, monkeypatch):
    cache, calls = Cache(tmp_path), []
    compute = _counting(calls)
    cache.get_or_compute("x", {"k": 1}, compute)  # producers default to compute's module (this one)
    cache.get_or_compute("x", {"k": 1}, compute, producers=P)
    assert len(calls) == 1

    real_digest = cache_module.source_digest
    monkeypatch.setattr(
        cache_module, "source_digest", lambda name: real_digest(name) + ("!" if name == __name__ else "")
    )
    cache.get_or_compute("x", {"k": 1}, compute)
    assert len(calls) == 2  # the producing module's source changed: a miss
    monkeypatch.setattr(cache_module, "source_digest", real_digest)

    for library in cache_module.LIBRARIES:  # torch, diffusers, peft, transformers
        bumped = {**cache_module.library_versions(), library: "99.0"}
        monkeypatch.setattr(cache_module, "library_versions", lambda bumped=bumped: bumped)
        cache.get_or_compute("x", {"k": 1}, compute)
    assert len(calls) == 2 + len(cache_module.LIBRARIES)
    monkeypatch.undo()
    cache.get_or_compute("x", {"k": 1}, compute)  # back to the original code: the first entry again
    assert len(calls) == 2 + len(cache_module.LIBRARIES) and cache.stats["x/hit"] == 2


def test_code_version_follows_the_producers_harness_imports_only():
    modules = producer_modules("dragbench.diffusion.lora")
    assert {
        "dragbench.diffusion.lora_augment",
        "dragbench.diffusion.lora_adapter",
        "dragbench.backbone",
    } <= set(modules)
    assert "dragbench.diffusion.ddim" not in modules and not any(m.startswith("torch") for m in modules)
    assert "dragbench.diffusion.ddim" in producer_modules("methods.dragdiffusion.method")
    with pytest.raises(ValueError, match="producers"):
        code_version(())


def test_editing_a_producer_file_changes_its_key(tmp_path, monkeypatch):
    (tmp_path / "producer_mod.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("producer_mod")
    before = code_version(("producer_mod",))
    time.sleep(0.01)
    (tmp_path / "producer_mod.py").write_text("VALUE = 2  # edited\n")
    assert code_version(("producer_mod",)) != before
    sys.modules.pop("producer_mod")


def test_each_cache_user_keys_by_its_own_code(tiny_backbone, tiny_samples, tmp_path, monkeypatch):
    """Editing DDIM inversion misses the inverted latents but reuses the LoRA snapshots (and vice versa)."""
    from methods.dragdiffusion.method import DragDiffusion

    knobs = dict(n_inference_steps=6, inversion_step=4, max_iters=1, lora_steps=1, lora_batch_size=1)

    def edit_stats() -> dict:
        method = DragDiffusion(tiny_backbone, cache=Cache(tmp_path), **knobs)
        method.edit(tiny_samples[0])
        return dict(method.cache.stats)

    assert edit_stats() == {"lora/miss": 1, "inversion/miss": 1}
    real_digest = cache_module.source_digest

    def edited(module: str):
        return lambda name: real_digest(name) + ("!" if name == module else "")

    monkeypatch.setattr(cache_module, "source_digest", edited("dragbench.diffusion.ddim"))
    assert edit_stats() == {"lora/hit": 1, "inversion/miss": 1}
    monkeypatch.setattr(cache_module, "source_digest", edited("dragbench.diffusion.lora_augment"))
    # LoRA code edited: LoRA retrained, bit-identical; the inversion keys on the LoRA content
    # (plus its own module and the backbone's), so the inverted latent is reused
    assert edit_stats() == {"lora/miss": 1, "inversion/hit": 1}


def test_evaluator_keys_dift_features_by_the_featurizers_module(tiny_samples):
    from eval.evaluator import Evaluator
    from eval.patch_featurizer import PatchFeaturizer

    class Recording:
        def __init__(self):
            self.producers = []

        def get_or_compute(self, namespace, inputs, compute, producers=None):
            self.producers.append((namespace, tuple(producers)))
            return compute()

    class KeyedPatches(PatchFeaturizer):
        cache_inputs = {"radius": 2}

    recording = Recording()
    Evaluator(KeyedPatches(radius=2), lambda a, b: 1.0, cache=recording)._original_features(tiny_samples[0])
    assert recording.producers == [("dift", (__name__,))]


def test_dragbench_cache_dir_moves_the_cache(tmp_path, monkeypatch):
    from conftest import OFFLINE
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from experiments import CONF_DIR
    from experiments.run import run_from_config

    moved = tmp_path / "moved_cache"
    monkeypatch.setenv("DRAGBENCH_CACHE_DIR", str(moved))
    assert Cache().root == moved  # the library default
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("config", overrides=[*OFFLINE, "method=identity", "dataset.n=1", "device=cpu"])
    GlobalHydra.instance().clear()
    assert cfg.paths.cache_dir == str(moved) and cfg.cache.root == str(moved)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "job")
        cfg.aggregate.n_boot = 10
    run_from_config(cfg)  # eval=toy caches the DIFT features of the original image
    assert [p.parent.parent.name for p in moved.rglob("*.st")] == ["dift"]
