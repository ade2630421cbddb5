"""DragBench metrics (protocol §3), declared once in eval.metrics: Mean Distance via DIFT point matching, Image
Fidelity via LPIPS, toy-world ground truth, Drag-Back (opt-in); bootstrap confidence intervals.

Imports only `dragbench`; `python -m eval.score EDITS_DIR --bench ROOT` scores a folder of edits.
"""

from __future__ import annotations

from eval.aggregate import summarize
from eval.dift import DiftFeaturizer, Featurizer
from eval.evaluator import METRIC_VERSION, Evaluator, SampleScore, official_evaluator, tiny_evaluator
from eval.lpips_fidelity import LpipsFidelity, build_fidelity, image_fidelity
from eval.mean_distance import MD_VARIANTS, mean_distance
from eval.metrics import METRICS, Metric, active_metrics

__all__ = [
    "METRIC_VERSION",
    "MD_VARIANTS",
    "METRICS",
    "Metric",
    "active_metrics",
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
