"""Bench-level metrics with seeded bootstrap confidence intervals, looping over eval.metrics.METRICS.

A per-pair metric (MD: protocol §3 averages all pairs) = mean over every pair of every `ok` sample (a 3-pair
sample weighs 3×); a per-sample metric (IF) = mean over `ok` samples.
CIs resample samples (not pairs) with replacement; a draw's MD is the mean of all pairs of the drawn samples.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from eval.metrics import MEAN_DISTANCE, METRICS, Metric

STATUSES = ("ok", "failed", "skipped", "unsupported")
# The unit of normalised MD (x100 / max(H, W), eval.mean_distance): the same at every image size.
NORMALISED_MD_SCALE = "pct_of_max_side"
SCALE_FREE_VARIANTS = ("normalised",)  # eval.mean_distance.MD_VARIANTS whose values do not depend on size


def md_scale(variant: str, width: int) -> str:
    """The unit one sample's MD is measured in.

    Pixel MD (standard, masked) is in pixels of the image as evaluated, so `dataset.resize` (a width; the
    aspect ratio is kept) changes its scale: "px@512w" = pixels of a 512-wide image. Normalised MD is a
    percentage of the longer side: NORMALISED_MD_SCALE at any size.

    Args:
        variant: the MD variant (eval.mean_distance.MD_VARIANTS).
        width: width in pixels of the image the MD was measured on.
    """
    return NORMALISED_MD_SCALE if variant in SCALE_FREE_VARIANTS else f"px@{int(width)}w"


def combined_md_scale(labels: pd.Series) -> str | None:
    """One label for a set of samples: their md_scale, or the distinct ones joined by "+" (mixed units)."""
    values = sorted({str(v) for v in labels.dropna()})
    return "+".join(values) if values else None


def bootstrap_ci(values: np.ndarray, n_boot: int, seed: int, ci: float) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of `values` (resampled with replacement)."""
    return ratio_bootstrap_ci(values, np.ones_like(values, dtype=np.float64), n_boot, seed, ci)


def ratio_bootstrap_ci(
    sums: np.ndarray, counts: np.ndarray, n_boot: int, seed: int, ci: float
) -> tuple[float, float]:
    """Percentile bootstrap CI of sum(sums) / sum(counts) over units drawn with replacement.

    Args:
        sums: (n,) per-unit total (e.g. a sample's summed pair distances).
        counts: (n,) per-unit count (e.g. its number of pairs).
        n_boot: bootstrap draws.
        seed: numpy Generator seed (same seed -> identical CI).
        ci: coverage, e.g. 0.95.

    Returns:
        (lo, hi); (nan, nan) when there are no units.
    """
    sums, counts = np.asarray(sums, np.float64), np.asarray(counts, np.float64)
    if len(sums) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(sums), size=(n_boot, len(sums)))  # (n_boot, n) drawn unit indices
    with np.errstate(invalid="ignore", divide="ignore"):
        stats = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)  # (n_boot,)
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.nanquantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _pair_mean(ok: pd.DataFrame, ok_pairs: pd.DataFrame, column: str, n_boot: int, seed: int, ci: float):
    """Mean of `column` over all pairs of ok samples, and its bootstrap CI over samples."""
    values = ok_pairs[column] if column in ok_pairs else pd.Series(np.nan, index=ok_pairs.index)
    pairs = ok_pairs[np.isfinite(values.to_numpy(np.float64))]
    per_sample = pairs.groupby("sample_id")[column].agg(["sum", "count"]) if len(pairs) else None
    if per_sample is None:
        per_sample = pd.DataFrame({"sum": [], "count": []})
    per_sample = per_sample.reindex(ok["sample_id"], fill_value=0)  # (n_ok, 2), ok-sample order
    mean = float(pairs[column].mean()) if len(pairs) else float("nan")
    ci_bounds = list(ratio_bootstrap_ci(per_sample["sum"], per_sample["count"], n_boot, seed, ci))
    return mean, ci_bounds, len(pairs)


def _sample_mean(ok: pd.DataFrame, column: str, n_boot: int, seed: int, ci: float):
    """Mean of `column` over ok samples, and its bootstrap CI."""
    values = ok[column].to_numpy(np.float64) if column in ok else np.full(len(ok), np.nan)
    return (float(values.mean()) if len(values) else float("nan")), list(
        bootstrap_ci(values, n_boot, seed, ci)
    )


def _reported(metric: Metric, samples: pd.DataFrame, pairs: pd.DataFrame) -> bool:
    """Core metrics always; partial ones (ground truth, IF unpasted) where some value is finite; opt-ins when
    their column exists."""
    column, table = (metric.pair_column, pairs) if metric.per == "pair" else (metric.sample_column, samples)
    if metric.partial:
        return column in table and bool(np.isfinite(table[column].to_numpy(np.float64)).any())
    return metric.opt_in is None or column in table


def _summarize_ok(
    ok: pd.DataFrame, pairs: pd.DataFrame, metrics: tuple[Metric, ...], n_boot: int, seed: int, ci: float
) -> dict:
    ok_pairs = pairs[pairs["sample_id"].isin(ok["sample_id"])]
    out: dict = {}
    for metric in metrics:
        column, table = (
            (metric.pair_column, ok_pairs) if metric.per == "pair" else (metric.sample_column, ok)
        )
        if metric.partial and not (column in table and np.isfinite(table[column].to_numpy(np.float64)).any()):
            continue  # e.g. a category without ground truth
        if metric.partial and metric.per == "sample":
            ok = ok[np.isfinite(ok[column].to_numpy(np.float64))]  # the samples it is defined on
        if metric.per == "pair":
            value, bounds, n_pairs = _pair_mean(ok, ok_pairs, metric.pair_column, n_boot, seed, ci)
            if metric is MEAN_DISTANCE:
                out["n_pairs"] = n_pairs  # the pairs MD averages
        else:
            value, bounds = _sample_mean(ok, metric.sample_column, n_boot, seed, ci)
        out.update({metric.name: value, f"{metric.name}_ci": bounds})
    out.setdefault("n_pairs", int(len(ok_pairs)))
    out["n_samples"] = len(ok)
    return out


def _summarize_group(
    samples: pd.DataFrame,
    pairs: pd.DataFrame,
    metrics: tuple[Metric, ...],
    n_boot: int,
    seed: int,
    ci: float,
) -> dict:
    out = _summarize_ok(samples[samples["status"] == "ok"], pairs, metrics, n_boot, seed, ci)
    for status in STATUSES:
        out[f"n_{status}"] = int((samples["status"] == status).sum())
    out["n_total"] = len(samples)
    if "md_scale" in samples:
        out["md_scale"] = combined_md_scale(samples["md_scale"])
    return out


def summarize(
    samples: pd.DataFrame,
    pairs: pd.DataFrame,
    n_boot: int = 1000,
    seed: int = 42,
    ci: float = 0.95,
    metrics: tuple[Metric, ...] | None = None,
) -> dict:
    """Every declared metric (eval.metrics) with bootstrap CIs, overall and per category.

    Args:
        samples: one row per sample: sample_id, category, status ("ok"|"failed"|"skipped"|"unsupported"),
            image_fidelity (NaN allowed for non-ok rows).
        pairs: one row per handle→target pair: sample_id, category, distance. Pairs of non-ok samples are
            ignored.
        n_boot: bootstrap draws.
        seed: bootstrap seed (each group uses a fresh generator with this seed, so results do not depend on
            the order of categories).
        ci: CI coverage.
        metrics: the metrics to report (e.g. `Evaluator.metrics`; an asked-for metric without values is NaN);
            None = every declared metric the tables carry (ground truth only where some value is finite).

    Returns:
        dict with `<metric>` and `<metric>_ci` [lo, hi] per metric (mean_distance, image_fidelity, ...),
        n_samples,
        n_pairs, n_ok (= n_samples, the samples MD / IF average), n_failed, n_skipped, n_unsupported, n_total
        and per_category {category: same keys}; md_scale (combined_md_scale) when `samples` has an
        `md_scale` column; eval_sizes (sorted "WxH" the MDs were measured at) when it has `eval_width` and
        `eval_height`.

    Raises:
        ValueError: missing columns, duplicate sample ids or an unknown status.
    """
    core = [m for m in METRICS if not m.optional]
    _check_columns(samples, ("sample_id", "category", "status", *_columns(core, "sample")), "samples")
    _check_columns(pairs, ("sample_id", "category", *_columns(core, "pair")), "pairs")
    if metrics is None:
        metrics = tuple(m for m in METRICS if _reported(m, samples, pairs))
    bad = sorted(set(samples["status"]) - set(STATUSES))
    if bad:
        raise ValueError(f"unknown status values {bad}; expected one of {', '.join(STATUSES)}")
    if samples["sample_id"].duplicated().any():
        dup = samples.loc[samples["sample_id"].duplicated(), "sample_id"].tolist()
        raise ValueError(f"duplicate sample_id rows in samples: {dup[:5]}")
    out = _summarize_group(samples, pairs, metrics, n_boot, seed, ci)
    if {"eval_width", "eval_height"} <= set(samples.columns):
        sizes = samples[["eval_width", "eval_height"]].dropna().astype(int).drop_duplicates()
        out["eval_sizes"] = sorted(f"{w}x{h}" for w, h in sizes.itertuples(index=False))
    out["per_category"] = {
        str(cat): _summarize_group(group, pairs, metrics, n_boot, seed, ci)
        for cat, group in samples.groupby("category", sort=True)
    }
    return out


def _columns(metrics: list[Metric], per: str) -> list[str]:
    """The results.csv (per="sample") or pairs.csv (per="pair") column each metric is aggregated from."""
    return [m.sample_column if per == "sample" else m.pair_column for m in metrics if m.per == per]


def _check_columns(df: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} table lacks columns {missing}; has {list(df.columns)}")
