"""Test-only stand-ins with known answers for the experiments tests (importable as `harness_fakes`).

Used through the test config dir tests/conf (`hydra.searchpath=[file://<repo>/tests/conf]`):
`eval=fast` (exact patch features + pixel fidelity, no network, milliseconds) and `method=knob_echo`
(accepts the three Fig. 7 knobs and shifts the image by an amount they determine).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from dragbench.sample import DragSample
from methods.base import EditResult


class PixelFidelity:
    """1 - mean |a - b| / 255: IF = 1 exactly for an unchanged image."""

    weights = "random"

    def __call__(self, original: np.ndarray, edited: np.ndarray) -> float:
        diff = np.abs(original.astype(np.float64) - edited.astype(np.float64))
        return float(1.0 - diff.mean() / 255.0)


def expected_md(samples: list[DragSample], shift_x: float = 0.0) -> float:
    """MD when each handle's feature is found `shift_x` px to the right (exact features), over all pairs."""
    dists = [
        np.hypot(*(t - h - [shift_x, 0.0]))
        for s in samples
        for h, t in zip(s.handles, s.targets, strict=True)
    ]
    return float(np.mean(dists))


def knob_shift(inversion_step: int, lora_steps: int, unet_block: int) -> int:
    """Pixels KnobEcho rolls the image by (0 at the paper defaults t=35, 80 steps, block 3)."""
    return abs(inversion_step - 35) // 10 + abs(lora_steps - 80) // 40 + abs(unet_block - 3)


class KnobEcho:
    """Rolls the image right by `knob_shift(...)` pixels; tracks handles along.

    Takes every knob the fig7 experiments set (`lora_plan_steps` is cost-only and ignored here).
    """

    def __init__(
        self,
        inversion_step: int = 35,
        lora_steps: int = 80,
        unet_block: int = 3,
        lora_plan_steps: list[int] | None = None,
    ) -> None:
        self.shift = knob_shift(inversion_step, lora_steps, unet_block)

    def edit(self, sample: DragSample) -> EditResult:
        image = np.roll(sample.image, self.shift, axis=1)
        handles = sample.handles + np.array([self.shift, 0.0])
        return EditResult(image=image, handles=handles, info={"iterations": self.shift, "time/drag": 0.0})


class CountingIdentity:
    """Identity that appends each edited sample_id to `log_file`; the 2nd edit ever logged there sleeps
    `delay_s` (a job killed in that sleep resumes, with the same config, without sleeping again)."""

    def __init__(self, log_file: str, delay_s: float = 0.0) -> None:
        self.log_file, self.delay_s, self.n_edits = Path(log_file), delay_s, 0

    def edit(self, sample: DragSample) -> EditResult:
        n_logged = len(self.log_file.read_text().splitlines()) if self.log_file.exists() else 0
        with open(self.log_file, "a") as handle:
            handle.write(f"{sample.sample_id} {os.getpid()}\n")
        self.n_edits += 1
        if n_logged == 1:
            time.sleep(self.delay_s)
        return EditResult(image=sample.image.copy(), info={"iterations": 0})


class FailOn:
    """Identity that raises on chosen samples (like a NaN loss) or returns a wrong-shaped image."""

    def __init__(self, raise_on: list[str], bad_shape_on: list[str] | None = None) -> None:
        self.raise_on, self.bad_shape_on = set(raise_on), set(bad_shape_on or [])

    def edit(self, sample: DragSample) -> EditResult:
        if sample.sample_id in self.raise_on:
            raise FloatingPointError("loss is NaN at iteration 3")
        if sample.sample_id in self.bad_shape_on:
            return EditResult(image=sample.image[:-1])
        return EditResult(image=sample.image.copy())
