"""The one small protocol every editing method implements (DESIGN.md "Core types"), and what `info` holds."""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from dragbench.sample import DragSample

# Keys every EditResult.info of status "ok" carries (the contract test asserts them for every
# conf/method/*.yaml); results.csv has a column for each:
REQUIRED_INFO = {
    "iterations": "int >= 0: optimisation iterations the edit ran (drag-loop iterations entered; 0 for a "
    "method without a loop). results.csv column `iterations`.",
    "time/<stage>": "float >= 0: wall seconds of each stage (at least one, e.g. time/lora, time/drag); "
    "results.csv column `seconds_<stage>`.",
    "peak_mem_mb": "float > 0: `peak_memory_mb(device)` at the end of the edit: on CUDA the peak of "
    "torch.cuda.max_memory_allocated since `reset_peak_memory(device)` at the start of the edit; elsewhere "
    "the process's peak resident set size so far (ru_maxrss; it cannot be reset, so it is the job's peak up "
    "to this edit). MiB.",
}


@dataclass
class EditResult:
    """What a method returns for one sample.

    Attributes:
        image: uint8 array (H, W, 3), same H x W as the input sample.
        handles: final tracked handle points (N, 2) in (x, y) image pixels, or None if the method
            does not track points.
        info: the `REQUIRED_INFO` keys (`iterations`, `time/<stage>`, `peak_mem_mb`), plus anything else
            worth logging (scalars become results.csv columns).
        status: "ok", or "unsupported" when the method cannot handle this sample (reason in info["reason"]).
        regenerated_box: (x0, y0, x1, y1), half-open pixels of `image`: the only part the method produced,
            when it pasted the input's own pixels back everywhere else (DragGAN's square crop of a
            non-square sample). None: the whole image is the method's output. The `image_fidelity_unpasted`
            metric (eval/metrics.py) measures IF inside this box only.
    """

    image: np.ndarray
    handles: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    regenerated_box: tuple[int, int, int, int] | None = None


@runtime_checkable
class DragMethod(Protocol):
    """A drag-editing method: configured once, then `edit` is called per sample.

    A new method is a class with `edit(sample) -> EditResult`, and a `conf/method/<name>.yaml` whose
    `_target_` names the class and whose other keys are its constructor's keyword arguments. An optional
    class attribute `display_name` is how comparison tables and figures name it (default: the class name).
    """

    def edit(self, sample: DragSample) -> EditResult: ...


def required_info(seconds: Mapping[str, float], iterations: int, device: torch.device | str) -> dict[str, Any]:
    """The `REQUIRED_INFO` keys of an edit that ends now: `iterations`, `time/<stage>` from `seconds`
    (`StageTimes.seconds`), and `peak_mem_mb` on `device`."""
    return {
        "iterations": int(iterations),
        **{f"time/{name}": value for name, value in seconds.items()},
        "peak_mem_mb": peak_memory_mb(device),
    }


def reset_peak_memory(device: torch.device | str) -> None:
    """Start of an edit: reset CUDA's peak counter (no-op elsewhere: the process peak RSS cannot be reset)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device | str) -> float:
    """`peak_mem_mb` as `REQUIRED_INFO` defines it, in MiB."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak * (1 if sys.platform == "darwin" else 1024) / 2**20


class StageTimes:
    """Wall seconds per stage (`required_info` turns them into the `time/<stage>` info keys).

    Example:
        >>> times = StageTimes()
        >>> with times.stage("drag"):
        ...     pass
        >>> sorted(times.seconds)
        ['drag']
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
