"""DragBench harness core: samples, reading/writing/validating the benchmark, synthetic data (protocol §1).

Light on purpose: importing `dragbench` pulls in numpy and PIL only (no torch); backbones live in
`dragbench.backbone`.
"""

from __future__ import annotations

from dragbench.bench_io import CATEGORIES, load_bench, load_sample, resize_sample, save_sample
from dragbench.sample import DragSample, InvalidSampleError, rc_to_xy, xy_to_rc

__all__ = [
    "CATEGORIES",
    "DragSample",
    "InvalidSampleError",
    "load_bench",
    "load_sample",
    "rc_to_xy",
    "resize_sample",
    "save_sample",
    "xy_to_rc",
]
