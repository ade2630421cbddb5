"""Bench aggregation (eval.aggregate): MD over all pairs, IF over samples, seeded bootstrap CIs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from eval.aggregate import ratio_bootstrap_ci, summarize


def tables(sample_rows, pair_rows):
    samples = pd.DataFrame(sample_rows, columns=["sample_id", "category", "status", "image_fidelity"])
    pairs = pd.DataFrame(pair_rows, columns=["sample_id", "category", "distance"])
    return samples, pairs


def random_bench(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    sample_rows, pair_rows = [], []
    for i in range(n):
        cat = "animals" if i % 2 else "art_work"
        sample_rows.append((f"{cat}/s{i}", cat, "ok", rng.uniform(0.8, 0.95)))
        pair_rows += [(f"{cat}/s{i}", cat, d) for d in rng.gamma(4.0, 8.0, size=rng.integers(1, 4))]
    return tables(sample_rows, pair_rows)


def test_md_averages_pairs_not_images():
    samples, pairs = tables(
        [("a/1", "a", "ok", 0.9), ("a/2", "a", "ok", 0.7)],
        [("a/1", "a", 10.0), ("a/2", "a", 2.0), ("a/2", "a", 2.0), ("a/2", "a", 2.0)],
    )
    out = summarize(samples, pairs, n_boot=200)
    assert out["mean_distance"] == pytest.approx(16.0 / 4)  # per-image mean would be (10 + 2) / 2 = 6
    assert out["image_fidelity"] == pytest.approx(0.8)
    assert (out["n_samples"], out["n_pairs"]) == (2, 4)


def test_non_ok_samples_excluded_and_counted():
    samples, pairs = tables(
        [("a/1", "a", "ok", 0.9), ("a/2", "a", "failed", np.nan), ("b/1", "b", "skipped", np.nan),
         ("b/2", "b", "unsupported", np.nan), ("b/3", "b", "ok", 0.5)],
        [("a/1", "a", 4.0), ("a/2", "a", 100.0), ("b/3", "b", 8.0)],
    )
    out = summarize(samples, pairs, n_boot=100)
    assert out["mean_distance"] == pytest.approx(6.0) and out["image_fidelity"] == pytest.approx(0.7)
    assert (out["n_failed"], out["n_skipped"], out["n_unsupported"]) == (1, 1, 1)
    assert out["per_category"]["a"]["mean_distance"] == pytest.approx(4.0)
    assert out["per_category"]["a"]["n_failed"] == 1
    assert out["per_category"]["b"]["image_fidelity"] == pytest.approx(0.5)
    assert out["per_category"]["b"]["n_unsupported"] == 1


def test_bootstrap_draw_is_mean_of_all_pairs_of_drawn_samples():
    """Brute force: redraw the same indices and average the pooled pair lists."""
    sums, counts = np.array([10.0, 6.0, 1.0]), np.array([1.0, 3.0, 1.0])
    lo, hi = ratio_bootstrap_ci(sums, counts, n_boot=500, seed=5, ci=0.9)
    idx = np.random.default_rng(5).integers(0, 3, size=(500, 3))
    pair_lists = [[10.0], [2.0, 2.0, 2.0], [1.0]]  # per-sample distances with those sums and counts
    stats = np.array([np.mean(np.concatenate([pair_lists[j] for j in row])) for row in idx])
    np.testing.assert_allclose([lo, hi], np.quantile(stats, [0.05, 0.95]))


def test_ci_contains_mean_shrinks_with_more_samples_and_is_seeded():
    small = summarize(*random_bench(20), n_boot=500)
    large = summarize(*random_bench(400), n_boot=500)
    for out in (small, large):
        lo, hi = out["mean_distance_ci"]
        assert lo < out["mean_distance"] < hi
        lo, hi = out["image_fidelity_ci"]
        assert lo < out["image_fidelity"] < hi
    width = lambda o, k: o[k][1] - o[k][0]  # noqa: E731
    assert width(large, "mean_distance_ci") < 0.5 * width(small, "mean_distance_ci")
    assert width(large, "image_fidelity_ci") < 0.5 * width(small, "image_fidelity_ci")
    again = summarize(*random_bench(20), n_boot=500)
    assert again == small
    other = summarize(*random_bench(20), n_boot=500, seed=1)
    assert other["mean_distance_ci"] != small["mean_distance_ci"]


def test_no_ok_samples_gives_nan_not_crash():
    samples, pairs = tables([("a/1", "a", "failed", np.nan)], [])
    out = summarize(samples, pairs)
    assert np.isnan(out["mean_distance"]) and out["n_samples"] == 0 and out["n_failed"] == 1


def test_rejects_unknown_status_and_missing_columns():
    samples, pairs = tables([("a/1", "a", "done", 0.9)], [])
    with pytest.raises(ValueError, match="unknown status"):
        summarize(samples, pairs)
    with pytest.raises(ValueError, match="lacks columns"):
        summarize(samples.drop(columns="image_fidelity"), pairs)


def test_counts_and_md_unit_beside_the_headline():
    from eval.aggregate import md_scale

    assert md_scale("standard", 512) == "px@512w" and md_scale("masked", 256) == "px@256w"
    assert md_scale("normalised", 512) == md_scale("normalised", 256) == "pct_of_max_side"
    samples, pairs = tables(
        [("a/1", "a", "ok", 0.9), ("a/2", "a", "failed", np.nan), ("b/1", "b", "unsupported", np.nan)],
        [("a/1", "a", 4.0)],
    )
    samples = samples.assign(md_scale=["px@512w", "px@512w", "px@256w"], eval_width=[512, 512, 256],
                             eval_height=[512, 768, 256])
    out = summarize(samples, pairs, n_boot=50)
    counts = (out["n_ok"], out["n_failed"], out["n_unsupported"], out["n_skipped"], out["n_total"])
    assert counts == (1, 1, 1, 0, 3) and out["n_samples"] == out["n_ok"]
    assert out["md_scale"] == "px@256w+px@512w"  # mixed units are named, never averaged silently
    assert out["eval_sizes"] == ["256x256", "512x512", "512x768"]
    assert out["per_category"]["a"]["md_scale"] == "px@512w" and out["per_category"]["a"]["n_total"] == 2
