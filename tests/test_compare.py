"""experiments.compare: every method on the samples all runs finished (the common subset), with CIs, per
category and timed; each run's full coverage separately; refusals in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eval.aggregate import summarize
from eval.metrics import METRICS
from experiments import compare
from experiments.compare import ComparisonError

CORE = tuple(m for m in METRICS if not m.optional)
# sample id -> its pairs' distances and IF for the DragDiffusion-like run; the DragGAN-like run doubles the
# distances and has IF 0.5 everywhere
DD_VALUES = {
    "art_work/a0": ([100.0], 0.2),
    "art_work/a1": ([90.0], 0.3),  # failed in the DragDiffusion-like run
    "animals/b0": ([10.0, 20.0], 0.9),
    "animals/b1": ([30.0], 0.8),
    "human_head/c0": ([40.0], 0.7),
    "human_head/c1": ([50.0, 60.0], 0.6),
}
DD_EDIT_SECONDS = {
    "art_work/a0": 9.0,
    "animals/b0": 4.0,
    "animals/b1": 2.0,
    "human_head/c0": 2.0,
    "human_head/c1": 4.0,
}


def fake_job(
    job_dir: Path,
    method: str,
    statuses: dict[str, str],
    values: dict[str, tuple[list[float], float]],
    edit_seconds: dict[str, float] | None = None,
    md_scale: str = "px@512w",
    weights: str = "random",
    boot_seed: int = 7,
) -> dict:
    """A job dir as experiments.run writes it: results.csv, pairs.csv and metrics.json (eval.aggregate)."""
    rows, pairs = [], []
    for sample_id, status in statuses.items():
        distances, fidelity = values[sample_id]
        ok = status == "ok"
        seconds = (edit_seconds or {}).get(sample_id, 1.0)
        rows.append(
            dict(
                sample_id=sample_id,
                category=sample_id.split("/")[0],
                status=status,
                # every core metric (eval.metrics): per-pair ones get the distances, per-sample ones the IF
                **{m.sample_column: float(np.mean(distances)) if m.per == "pair" else fidelity for m in CORE},
                md_scale=md_scale,
                n_pairs=len(distances),
                seconds=seconds + 5.0,  # + scoring: never counted as edit time
                seconds_edit=seconds if ok else math.nan,
                seconds_eval=5.0,
                seconds_lora=seconds / 4 if ok else math.nan,
                seconds_drag=3 * seconds / 4 if ok else math.nan,
                peak_mem_mb=100.0 * len(rows),
            )
        )
        if ok:
            for k, d in enumerate(distances):
                pair = dict(sample_id=sample_id, category=sample_id.split("/")[0], pair=k)
                pairs.append({**pair, **{m.pair_column: d for m in CORE if m.per == "pair"}})
    results = pd.DataFrame(rows)
    results.loc[results["status"] != "ok", [m.sample_column for m in CORE if m.sample_column]] = math.nan
    pair_columns = ["sample_id", "category", "pair", *(m.pair_column for m in CORE if m.per == "pair")]
    pair_frame = pd.DataFrame(pairs, columns=pair_columns)
    aggregate = {"n_boot": 200, "seed": boot_seed}
    metrics = summarize(results, pair_frame, **aggregate)
    metrics.update(
        weights=weights,
        device="cpu",
        config={"method": {"_target_": f"methods.x.{method}"}, "aggregate": aggregate},
    )
    job_dir.mkdir(parents=True)
    results.to_csv(job_dir / "results.csv", index=False)
    pair_frame.to_csv(job_dir / "pairs.csv", index=False)
    (job_dir / "metrics.json").write_text(json.dumps(metrics))
    return metrics


def two_runs(tmp_path: Path) -> list[Path]:
    """DragDiffusion-like (one art_work sample failed) vs DragGAN-like (animals + human_head only)."""
    dd_status = {i: "failed" if i == "art_work/a1" else "ok" for i in DD_VALUES}
    fake_job(tmp_path / "dd", "DragDiffusion", dd_status, DD_VALUES, DD_EDIT_SECONDS)
    gan_values = {i: ([2 * d for d in ds], 0.5) for i, (ds, _) in DD_VALUES.items()}
    gan_status = {i: "unsupported" if i.startswith("art_work") else "ok" for i in DD_VALUES}
    del gan_status["art_work/a1"]  # never attempted: absent from its results.csv
    fake_job(tmp_path / "gan", "DragGAN", gan_status, gan_values)
    return [tmp_path / "dd", tmp_path / "gan"]


def test_common_subset_recomputes_every_metric_on_the_samples_all_runs_finished(tmp_path):
    runs = two_runs(tmp_path)
    result = compare.compare(runs)
    assert result.common_ids == ["animals/b0", "animals/b1", "human_head/c0", "human_head/c1"]
    dd, gan = result.common.to_dict("records")
    assert (dd["label"], gan["label"]) == ("DragDiffusion", "DragGAN")
    assert (dd["n_samples"], dd["n_pairs"], gan["n_samples"], gan["n_pairs"]) == (4, 6, 4, 6)
    assert dd["mean_distance"] == pytest.approx((10 + 20 + 30 + 40 + 50 + 60) / 6)  # pooled over pairs
    assert dd["image_fidelity"] == pytest.approx((0.9 + 0.8 + 0.7 + 0.6) / 4)
    assert gan["mean_distance"] == pytest.approx(70.0) and gan["image_fidelity"] == 0.5
    assert (gan["image_fidelity_ci_low"], gan["image_fidelity_ci_high"]) == (0.5, 0.5)
    assert dd["mean_distance_ci_low"] < 35.0 < dd["mean_distance_ci_high"]
    # paired bootstrap: both runs resample the same samples, and the GAN's distances are exactly twice
    assert gan["mean_distance_ci_low"] == pytest.approx(2 * dd["mean_distance_ci_low"])
    assert gan["mean_distance_ci_high"] == pytest.approx(2 * dd["mean_distance_ci_high"])
    assert "gt_distance" not in result.common  # optional, no run has it
    assert "the CIs are paired" in compare.comparison_markdown(result)
    # full coverage: each run's own metrics.json, on its own samples
    full = result.full.set_index("label")
    assert full.loc["DragDiffusion", "mean_distance"] == pytest.approx((210 + 100) / 7)
    assert full.loc["DragDiffusion", "coverage"] == pytest.approx(5 / 6)
    assert (full.loc["DragGAN", "n_ok"], full.loc["DragGAN", "n_unsupported"], full.loc["DragGAN", "n_total"]) == (
        4,
        1,
        5,
    )


def test_timing_is_the_edit_only_per_image_and_per_pair(tmp_path):
    result = compare.compare(two_runs(tmp_path))
    dd, gan = result.common.to_dict("records")
    assert dd["seconds_per_image"] == pytest.approx((4 + 2 + 2 + 4) / 4)  # seconds_eval (5 s) excluded
    assert dd["seconds_per_pair"] == pytest.approx(12 / 6)
    assert (dd["seconds_lora"], dd["seconds_drag"]) == pytest.approx((0.75, 2.25))
    assert "seconds_eval" not in result.common and "seconds_drag_back" not in result.common
    assert gan["seconds_per_image"] == 1.0 and gan["seconds_per_pair"] == pytest.approx(4 / 6)
    assert dd["peak_mem_mb"] == 500.0  # largest over the common subset's rows
    full = result.full.set_index("label")
    assert full.loc["DragDiffusion", "seconds_per_image"] == pytest.approx((9 + 12) / 5)  # its ok samples
    assert full.loc["DragDiffusion", "seconds_per_pair"] == pytest.approx(21 / 7)
    assert compare._stages(dd) == "lora 0.75 + drag 2.25"


def test_per_category_cells_in_the_papers_order_with_n(tmp_path):
    result = compare.compare(two_runs(tmp_path))
    cells = result.per_category
    common = cells[cells["subset"] == "common"].set_index(["category", "label"])
    assert list(dict.fromkeys(cells.loc[cells["subset"] == "common", "category"])) == ["animals", "human_head"]
    assert common.loc[("animals", "DragDiffusion"), "mean_distance"] == pytest.approx(20.0)
    assert common.loc[("human_head", "DragDiffusion"), "mean_distance"] == pytest.approx(50.0)
    assert common.loc[("animals", "DragGAN"), "mean_distance"] == pytest.approx(40.0)
    assert common.loc[("human_head", "DragGAN"), "image_fidelity"] == 0.5
    assert common.loc[("animals", "DragDiffusion"), ["n_samples", "n_pairs"]].tolist() == [2, 3]
    full = cells[cells["subset"] == "full"].set_index(["category", "label"])
    # the appendix order puts art_work first; DragGAN's art_work cell has no ok sample
    assert list(dict.fromkeys(cells.loc[cells["subset"] == "full", "category"]))[0] == "art_work"
    assert full.loc[("art_work", "DragDiffusion"), "mean_distance"] == 100.0
    assert full.loc[("art_work", "DragGAN"), "n_samples"] == 0
    assert compare.category_order({"other_objects", "art_work", "animals"}) == [
        "art_work",
        "animals",
        "other_objects",
    ]
    assert compare.category_order({"drag100", "animals"}) == ["animals", "drag100"]  # not DragBench: sorted


def test_samples_csv_says_which_samples_each_run_covered(tmp_path):
    samples = compare.compare(two_runs(tmp_path)).samples.set_index("sample_id")
    assert samples.loc["art_work/a1", "DragDiffusion"] == "failed"
    assert samples.loc["art_work/a1", "DragGAN"] == compare.ABSENT
    assert samples.loc["art_work/a0", "DragGAN"] == "unsupported"
    assert samples["common"].sum() == 4 and list(samples.index[:2]) == ["art_work/a0", "art_work/a1"]


def test_cli_writes_the_sections_in_order_and_prints_them(tmp_path, capsys):
    compare.main([*map(str, two_runs(tmp_path)), "--out", str(tmp_path / "cmp")])
    out = tmp_path / "cmp"
    markdown = (out / "comparison.md").read_text()
    assert markdown in capsys.readouterr().out
    sections = ["## Common subset: 4 samples (6 pairs)", "## Full coverage", "## Per category", "## Coverage"]
    positions = [markdown.index(s) for s in sections]
    assert positions == sorted(positions)
    assert "| DragDiffusion | 35.00 [" in markdown and "| 3.00 | 2.00 | lora 0.75 + drag 2.25 | 500 |" in markdown
    assert "| animals | 2 (3) | 20.00 [" in markdown and "| **all** | 4 (6) | 35.00 [" in markdown
    assert (
        "- **DragGAN** (`" in markdown and "lacks 2 (1 absent, 1 unsupported; by category: art_work 2)" in markdown
    )
    assert "5/6 (83%) | 1 | 0 | px@512w" in markdown  # full coverage row of DragDiffusion
    assert pd.read_csv(out / "comparison.csv")["mean_distance"].tolist() == pytest.approx([35.0, 70.0])
    assert set(pd.read_csv(out / "per_category.csv")["subset"]) == {"common", "full"}
    assert len(pd.read_csv(out / "samples.csv")) == 6 and len(pd.read_csv(out / "full_coverage.csv")) == 2
    for suffix in (".png", ".pdf"):
        assert (out / f"md_vs_if{suffix}").stat().st_size > 1000


def test_single_all_ok_job_gives_its_metrics_json_numbers(make_cfg):
    """The common subset of one run whose samples are all ok is the run itself: same numbers, same CIs."""
    from experiments.run import run_from_config

    cfg = make_cfg("method=identity", "eval=fast")
    metrics = run_from_config(cfg)
    assert metrics["n_ok"] == metrics["n_total"] >= 2
    result = compare.compare([cfg.paths.output_dir])
    row = result.common.iloc[0]
    for metric in (m for m in METRICS if m.name in metrics):
        assert row[metric.name] == metrics[metric.name], metric.name
        assert [row[f"{metric.name}_ci_low"], row[f"{metric.name}_ci_high"]] == metrics[f"{metric.name}_ci"]
    assert row["mean_distance_ci_low"] < row["mean_distance_ci_high"]  # a CI that can tell orders apart
    cells = result.per_category[result.per_category["subset"] == "common"]
    for cell in cells.to_dict("records"):
        recorded = metrics["per_category"][cell["category"]]
        assert cell["mean_distance"] == recorded["mean_distance"]
        assert [cell["mean_distance_ci_low"], cell["mean_distance_ci_high"]] == recorded["mean_distance_ci"]


def test_refusals_are_one_line_naming_the_runs(tmp_path):
    dd = {i: "ok" for i in DD_VALUES}
    fake_job(tmp_path / "a", "DragDiffusion", {"art_work/a0": "ok"}, DD_VALUES)
    fake_job(tmp_path / "b", "DragGAN", {"animals/b0": "ok"}, DD_VALUES)
    with pytest.raises(SystemExit) as err:
        compare.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp")])
    message = str(err.value.code)
    assert "\n" not in message and "share no sample id" in message and str(tmp_path / "b") in message
    fake_job(tmp_path / "c", "DragDiffusion", {**dd, "human_head/c1": "failed"}, DD_VALUES)
    fake_job(tmp_path / "d", "DragGAN", {"human_head/c1": "ok", "animals/b0": "unsupported"}, DD_VALUES)
    with pytest.raises(ComparisonError, match=r"common subset is empty .*d \(DragGAN\): 1 ok of 2"):
        compare.compare([tmp_path / "c", tmp_path / "d"])
    assert not (tmp_path / "cmp").exists()


def test_mixed_md_scales_are_refused_and_normalised_ones_compare(tmp_path):
    fake_job(tmp_path / "p512", "DragDiffusion", {"animals/b0": "ok"}, DD_VALUES, md_scale="px@512w")
    fake_job(tmp_path / "p256", "DragGAN", {"animals/b0": "ok"}, DD_VALUES, md_scale="px@256w")
    with pytest.raises(SystemExit) as err:
        compare.main([str(tmp_path / "p512"), str(tmp_path / "p256"), "--out", str(tmp_path / "cmp")])
    message = str(err.value.code)
    assert "\n" not in message and "px@256w (1), px@512w (1)" in message and "eval.variant=normalised" in message
    assert not (tmp_path / "cmp").exists()
    for name in ("n0", "n1"):
        fake_job(tmp_path / name, "DragDiffusion", {"animals/b0": "ok"}, DD_VALUES, md_scale="pct_of_max_side")
    result = compare.compare([tmp_path / "n0", tmp_path / "n1"])
    assert "CIs are paired" in compare.comparison_markdown(result)
    fake_job(tmp_path / "s1", "DragGAN", {"animals/b0": "ok"}, DD_VALUES, md_scale="pct_of_max_side", boot_seed=1)
    other_seed = compare.comparison_markdown(compare.compare([tmp_path / "n0", tmp_path / "s1"]))
    assert "DragGAN: {'n_boot': 200, 'seed': 1}): their CIs are not paired" in other_seed
    assert list(result.common["md_scale"]) == ["pct_of_max_side"] * 2
    # two runs of one method are told apart by their dir
    assert list(result.common["label"]) == [f"DragDiffusion ({tmp_path / n})" for n in ("n0", "n1")]


def test_runs_without_edit_timing_say_n_a(tmp_path):
    fake_job(tmp_path / "old", "DragDiffusion", {"animals/b0": "ok"}, DD_VALUES)
    results = pd.read_csv(tmp_path / "old/results.csv").drop(
        columns=["seconds_edit", "seconds_lora", "seconds_drag"]
    )
    results.to_csv(tmp_path / "old/results.csv", index=False)
    result = compare.compare([tmp_path / "old"])
    assert math.isnan(result.common["seconds_per_image"].iloc[0])  # never the total with scoring instead
    assert "| n/a | n/a | n/a |" in compare.common_markdown(result)


def test_method_names_come_from_display_name_else_the_class():
    # SDE-Drag spells itself as its paper does; a class without display_name keeps its name; a run recorded by
    # a checkout whose class no longer imports keeps the recorded class name
    assert compare.method_name("methods.sdedrag.method.SDEDrag") == "SDE-Drag"
    assert compare.method_name("methods.gooddrag.method.GoodDrag") == "GoodDrag"
    assert compare.method_name("methods.gone.Vanished") == "Vanished"
    assert compare.method_name("?") == "?"
