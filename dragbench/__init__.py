"""DragBench harness core: samples, reading/writing/validating DragBench (protocol §1) and Drag100 (§11),
synthetic data.

Light on purpose: importing `dragbench` pulls in numpy and PIL only (no torch); backbones live in
`dragbench.backbone`.
"""

from __future__ import annotations

from dragbench.bench_io import CATEGORIES, load_bench, load_sample, resize_sample, save_sample
from dragbench.drag100 import load_drag100, load_drag100_sample, save_drag100_sample
from dragbench.sample import DragSample, InvalidSampleError, rc_to_xy, xy_to_rc

__all__ = [
    "CATEGORIES",
    "DragSample",
    "InvalidSampleError",
    "load_bench",
    "load_drag100",
    "load_drag100_sample",
    "load_sample",
    "rc_to_xy",
    "resize_sample",
    "save_drag100_sample",
    "save_sample",
    "xy_to_rc",
]
