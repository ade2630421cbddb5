"""One job end to end: known answers on synthetic samples, the job dir contract, failures, plugins."""

from __future__ import annotations

import json
import logging
import textwrap

import numpy as np
import pandas as pd
import pytest
from harness_fakes import PixelFidelity, expected_md
from PIL import Image

from dragbench.backbone import MissingWeightsError
from dragbench.sample import DragSample
from eval.evaluator import Evaluator
from eval.patch_featurizer import PatchFeaturizer
from experiments.job import run_job
from experiments.results_store import ResultsStore
from experiments.run import run_from_config
from methods.identity import Identity


def test_identity_job_writes_the_job_dir_contract(make_cfg, tiny_samples):
    cfg = make_cfg("method=identity", "eval=fast")
    metrics = run_from_config(cfg)
    job = cfg.paths.output_dir
    results = pd.read_csv(f"{job}/results.csv")
    pairs = pd.read_csv(f"{job}/pairs.csv")
    # identity + exact features: each handle is found where it was, so MD = mean handle->target distance
    assert metrics["mean_distance"] == pytest.approx(expected_md(tiny_samples), abs=1e-9)
    assert metrics["image_fidelity"] == 1.0
    assert (metrics["n_samples"], metrics["n_pairs"], metrics["n_failed"]) == (
        2,
        sum(s.n_pairs for s in tiny_samples),
        0,
    )
    assert list(results["sample_id"]) == [s.sample_id for s in tiny_samples]
    assert set(results["status"]) == {"ok"}
    for column in (
        "seconds",
        "peak_mem_mb",
        "iterations",
        "seed",
        "method_weights",
        "eval_weights",
        "weights",
        "metric_version",
        "git_commit",
        "torch_version",
        "diffusers_version",
    ):
        assert column in results, column
    assert (
        results["method_weights"].iloc[0],
        results["eval_weights"].iloc[0],
        results["weights"].iloc[0],
    ) == ("none", "random", "random")
    assert len(pairs) == metrics["n_pairs"]
    np.testing.assert_allclose(pairs[["matched_x", "matched_y"]], pairs[["handle_x", "handle_y"]])
    assert pairs["final_x"].isna().all()  # Identity tracks no points
    on_disk = json.loads(open(f"{job}/metrics.json").read())
    for key in (
        "mean_distance_ci",
        "image_fidelity_ci",
        "per_category",
        "git_commit",
        "git_dirty",
        "device",
        "overrides",
        "config",
        "metric_version",
        "seed",
        "torch_version",
    ):
        assert key in on_disk, key
    assert on_disk["config"]["method"]["_target_"] == "methods.identity.Identity"
    for sample in tiny_samples:  # the official output layout, pixel-exact
        edited = np.asarray(Image.open(f"{job}/edits/{sample.sample_id}/dragged_image.png"))
        np.testing.assert_array_equal(edited, sample.image)
    assert "dataset:" in open(f"{job}/config_resolved.yaml").read()


@pytest.mark.slow  # the tiny DIFT ensemble: ~5-20 s per sample on 2 busy CPU cores
def test_offline_preset_runs_the_real_tiny_metrics(make_cfg, tiny_samples):
    cfg = make_cfg("method=identity", "eval=tiny", "dataset.n=1")  # preset=offline alone picks eval=toy
    metrics = run_from_config(cfg)
    assert cfg.eval._target_ == "eval.evaluator.tiny_evaluator"
    assert metrics["n_samples"] == 1 and metrics["weights"] == "random"
    assert metrics["image_fidelity"] == pytest.approx(1.0, abs=1e-6)  # LPIPS(x, x) = 0 for any trunk


def test_failing_samples_are_recorded_and_the_job_goes_on(make_cfg, tiny_samples, caplog):
    first, second = (s.sample_id for s in tiny_samples)
    cfg = make_cfg(
        "method=identity",
        "method._target_=harness_fakes.FailOn",
        f"+method.raise_on=[{first}]",
        "eval=fast",
        "dataset.n=2",
    )
    metrics = run_from_config(cfg)
    results = pd.read_csv(f"{cfg.paths.output_dir}/results.csv").set_index("sample_id")
    assert results.loc[first, "status"] == "failed"
    assert results.loc[first, "error"] == "FloatingPointError: loss is NaN at iteration 3"
    assert results.loc[second, "status"] == "ok"
    assert (metrics["n_failed"], metrics["n_samples"]) == (1, 1)
    assert metrics["mean_distance"] == pytest.approx(expected_md(tiny_samples[1:]), abs=1e-9)
    assert any(
        r.levelno == logging.ERROR and r.exc_info for r in caplog.records
    )  # traceback goes to the job log


def test_invalid_sample_and_malformed_result_become_failed_rows(tmp_path, tiny_samples):
    good = tiny_samples[0]
    bad = DragSample(
        "art_work/bad", "art_work", "p", good.image, good.mask, good.handles * np.nan, good.targets
    )
    wrong_shape = DragSample(
        "art_work/wrong", "art_work", "p", good.image, good.mask, good.handles, good.targets
    )

    class Method(Identity):
        def edit(self, sample):
            result = super().edit(sample)
            if sample.sample_id == "art_work/wrong":
                result.image = result.image[:-1]
            return result

    store = ResultsStore(tmp_path / "job")
    evaluator = Evaluator(PatchFeaturizer(radius=2), PixelFidelity())
    metrics = run_job([bad, good, wrong_shape], Method(), evaluator, store, n_boot=50, progress=False)
    status = store.results().set_index("sample_id")["status"].to_dict()
    assert status == {"art_work/bad": "failed", good.sample_id: "ok", "art_work/wrong": "failed"}
    error = store.results().set_index("sample_id").loc["art_work/wrong", "error"]
    assert error.startswith("ValueError: edited image must be uint8")
    assert metrics["n_failed"] == 2 and metrics["mean_distance"] == pytest.approx(expected_md([good]))


def test_third_party_method_runs_from_outside_the_repo(cli, tmp_path, tiny_samples):
    plugin = tmp_path / "plugins"
    plugin.mkdir()
    (plugin / "shiftmod.py").write_text(
        textwrap.dedent("""
        import numpy as np
        from methods.base import EditResult

        class Shift:
            def __init__(self, pixels: int):
                self.pixels = pixels

            def edit(self, sample):
                image = np.roll(sample.image, self.pixels, axis=1)
                handles = sample.handles + [self.pixels, 0]
                return EditResult(image=image, handles=handles, info={"time/shift": 0.0})
    """)
    )
    job = tmp_path / "job"
    proc = cli(
        "method=identity",
        "method._target_=shiftmod.Shift",
        "+method.pixels=3",
        "eval=fast",
        f"hydra.run.dir={job}",
        pythonpath=(plugin,),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Instantiating <shiftmod.Shift>" in proc.stderr + proc.stdout
    metrics = json.loads((job / "metrics.json").read_text())
    # the texture moved 3 px right, so every handle is found 3 px right of where it was
    assert metrics["mean_distance"] == pytest.approx(expected_md(tiny_samples, shift_x=3.0), abs=1e-9)
    assert metrics["image_fidelity"] < 1.0
    pairs = pd.read_csv(job / "pairs.csv")
    np.testing.assert_allclose(pairs["final_x"], pairs["handle_x"] + 3)
    assert "seconds_shift" in pd.read_csv(job / "results.csv")
    assert (job / "run.log").exists() and (job / ".hydra" / "config.yaml").exists()


def test_missing_real_weights_fail_fast_with_one_line(make_cfg):
    cfg = make_cfg(
        "method=identity", "eval=official", "eval.local_files_only=true", "eval.pretrained=/nonexistent/sd21"
    )
    with pytest.raises(MissingWeightsError) as err:
        run_from_config(cfg)
    assert "\n" not in str(err.value) and "sd21" in str(err.value)


def test_info_columns_and_weights_labels():
    from experiments.job import combined_weights, info_columns

    info = {
        "time/lora": 1.5,
        "time/drag": 2.0,
        "iterations": 7,
        "reached": True,
        "trace": [1, 2],
        "weights": "x",
    }
    assert info_columns(info) == {
        "iterations": 7,
        "seconds_lora": 1.5,
        "seconds_drag": 2.0,
        "info/reached": True,
        "info/weights": "x",
    }
    assert combined_weights("real", "real") == combined_weights("none", "real") == "real"
    assert combined_weights("random", "real") == "random"
    assert combined_weights("toy", "random") == "random+toy"


def test_toy_world_job_reports_ground_truth_distance(make_cfg):
    """On toy scenes the identity edit leaves every object in place: gt_distance = mean drag length."""
    from dragbench.toy.samples import toy_samples

    cfg = make_cfg("method=identity", "eval=fast", "dataset=toy", "dataset.n=3")
    metrics = run_from_config(cfg)
    samples = toy_samples(3)
    drag = np.concatenate([np.linalg.norm(s.targets - s.handles, axis=1) for s in samples])
    assert metrics["gt_distance"] == pytest.approx(drag.mean(), abs=0.1)
    assert metrics["gt_distance_ci"][0] <= metrics["gt_distance"] <= metrics["gt_distance_ci"][1]
    pairs = pd.read_csv(f"{cfg.paths.output_dir}/pairs.csv")
    np.testing.assert_allclose(pairs["gt_distance"], drag, atol=0.1)


def test_job_where_every_sample_failed_writes_results_and_exits_1(run_app, tmp_path, tiny_samples, caplog):
    job = tmp_path / "job"
    ids = ",".join(s.sample_id for s in tiny_samples)
    with pytest.raises(SystemExit) as exit_info:
        run_app("method=identity", "method._target_=harness_fakes.FailOn", f"+method.raise_on=[{ids}]",
                "eval=fast", f"hydra.run.dir={job}")
    assert exit_info.value.code == 1
    metrics = json.loads((job / "metrics.json").read_text())
    assert (metrics["n_ok"], metrics["n_failed"], metrics["n_total"]) == (0, 2, 2)
    assert list(pd.read_csv(job / "results.csv")["status"]) == ["failed", "failed"]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and not r.exc_info]
    assert errors == [f"every sample failed (2 failed, 0 ok, 0 unsupported): MD/IF undefined; "
                      f"see the error column of {job / 'results.csv'}"]


def test_counts_and_md_scale_sit_next_to_every_headline_number(make_cfg, tiny_samples, tmp_path):
    first = tiny_samples[0].sample_id
    cfg = make_cfg("method=identity", "method._target_=harness_fakes.FailOn", f"+method.raise_on=[{first}]",
                   "eval=fast")
    metrics = run_from_config(cfg)
    counts = (metrics["n_ok"], metrics["n_failed"], metrics["n_unsupported"], metrics["n_total"])
    assert counts == (1, 1, 0, 2)
    assert metrics["md_scale"] == "px@64w" and metrics["eval_sizes"] == ["64x64"]
    results = pd.read_csv(f"{cfg.paths.output_dir}/results.csv")
    assert list(results["md_scale"]) == ["px@64w", "px@64w"]  # failed rows too: the dataset sets the unit
    assert list(results["eval_width"]) == [64, 64] and list(results["eval_height"]) == [64, 64]
    normalised = run_from_config(make_cfg("method=identity", "eval=fast", "eval.variant=normalised",
                                          root=tmp_path / "normalised"))
    assert normalised["md_scale"] == "pct_of_max_side"


def test_multirun_with_an_all_failed_job_writes_the_summary_then_exits_1(run_app, tmp_path, tiny_samples):
    sweep, first = tmp_path / "sweep", tiny_samples[0].sample_id
    ids = ",".join(s.sample_id for s in tiny_samples)
    with pytest.raises(SystemExit) as exit_info:  # job 0 loses one sample, job 1 loses all
        run_app("-m", "method=identity", "method._target_=harness_fakes.FailOn", "eval=fast",
                f"+method.raise_on=[{first}],[{ids}]", f"hydra.sweep.dir={sweep}")
    assert exit_info.value.code == 1
    summary = pd.read_csv(sweep / "summary.csv")
    assert list(summary["job_status"]) == ["ok", "all_failed"]
    assert list(summary["n_failed"]) == [1, 2] and list(summary["n_ok"]) == [1, 0]
    assert not (sweep / "fig7.png").exists()  # the figure belongs to the fig7 experiments only
