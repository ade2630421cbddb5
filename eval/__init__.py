"""DragBench metrics (SPEC §3): Mean Distance via DIFT point matching, Image Fidelity via LPIPS, bootstrap
confidence intervals.

Imports only `dragbench`; `python -m eval.score EDITS_DIR --bench ROOT` scores a folder of edits.
"""

from __future__ import annotations

from eval.aggregate import summarize
from eval.dift import DiftFeaturizer, Featurizer
from eval.evaluator import METRIC_VERSION, Evaluator, SampleScore, official_evaluator, tiny_evaluator
from eval.lpips_fidelity import LpipsFidelity, build_fidelity, image_fidelity
from eval.mean_distance import MD_VARIANTS, mean_distance

__all__ = [
    "METRIC_VERSION",
    "MD_VARIANTS",
    "DiftFeaturizer",
    "Evaluator",
    "Featurizer",
    "LpipsFidelity",
    "SampleScore",
    "build_fidelity",
    "image_fidelity",
    "mean_distance",
    "official_evaluator",
    "summarize",
    "tiny_evaluator",
]
