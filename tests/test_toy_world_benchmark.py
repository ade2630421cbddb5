"""benchmarks/toy_world.py end to end on 2 toy samples: edits, scores with known answers, example figure."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.toy_world import example_figure, run_edits, score
from dragbench.toy.model import WEIGHTS_DIR, load_toy_backbone
from dragbench.toy.samples import toy_samples

pytestmark = pytest.mark.skipif(not (WEIGHTS_DIR / "model_index.json").exists(),
                                reason="toy weights not committed (train: dragbench/toy/README.md)")


def test_identity_scores_its_drag_length_and_the_figure_is_drawn(tmp_path):
    samples = toy_samples(2, seed=0)
    run_edits(samples, load_toy_backbone(device="cpu"), ["identity"], tmp_path)
    report = score(samples, tmp_path, "cpu")
    ident = report["identity"]
    drag = np.mean([np.linalg.norm(s.targets - s.handles, axis=1).mean() for s in samples])
    assert report["n_samples"] == 2 and report["pairs"] == 10 and ident["n"] == 2
    assert ident["gt_distance"] == pytest.approx(drag, abs=0.1)  # nothing moved
    assert ident["gt_ratio_vs_identity"] == pytest.approx(1.0) and ident["lost_fraction"] == 0
    assert ident["md_toy_dift"] == pytest.approx(drag, abs=1e-6)  # same image -> same features -> no motion
    assert "dd_lora" not in report  # methods without an edits file are left out
    png, pdf = example_figure(samples, tmp_path)
    assert png.stat().st_size > 5000 and pdf.stat().st_size > 1000
