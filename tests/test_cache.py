"""Content-addressed cache: round trip, key sensitivity, corruption detection, concurrent writers."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import torch

from dragbench.cache import Cache, cache_key


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
    assert cache_key("lora", {"image": image}) == cache_key("lora", {"image": image.copy()})
    assert cache_key("lora", {"image": image}) != cache_key("lora", {"image": other})
    assert cache_key("lora", {"step": 20}) != cache_key("lora", {"step": 40})
    assert cache_key("lora", {"step": 20}) != cache_key("inversion", {"step": 20})


def test_corrupt_entry_is_dropped_and_recomputed(tmp_path, caplog):
    cache = Cache(tmp_path)
    inputs = {"k": 1}
    cache.put("x", inputs, {"a": torch.ones(3)})
    path = cache.path("x", inputs)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF  # flip bits in the payload
    path.write_bytes(bytes(blob))
    assert cache.get("x", inputs) is None
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
        cache.put("shared", {"k": "same"}, {"a": torch.full((1000,), value)})


def test_concurrent_writers_never_leave_a_torn_entry(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), float(i), 20)) for i in range(3)]
    for p in procs:
        p.start()
    reader = Cache(tmp_path)
    seen = 0
    while any(p.is_alive() for p in procs):
        got = reader.get("shared", {"k": "same"})
        if got is not None:
            seen += 1
            assert torch.unique(got["a"]).numel() == 1  # one writer's whole content, never a mix
    for p in procs:
        p.join()
        assert p.exitcode == 0
    final = reader.get("shared", {"k": "same"})
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
    with cache.lock("x", {"k": 1}):
        # the same key again in the same thread (nested get_or_compute) must not deadlock
        cache.get_or_compute("x", {"k": 1}, lambda: inner.append(1) or {"a": torch.ones(1)})
    assert inner == [1] and cache.stats["x/miss"] == 1
    with Cache(tmp_path / "off", enabled=False).lock("x", {"k": 1}):
        pass
    assert not (tmp_path / "off").exists()
