"""Score any folder of edits in the official layout against DragBench (every eval.metrics metric, with CIs).

    python -m eval.score EDITS_DIR --bench ROOT [--eval official|tiny] [--variant standard|masked|normalised]
                         [--out DIR] [--pretrained ID_OR_DIR] [--local-files-only]

EDITS_DIR holds `<category>/<name>/dragged_image.png` (as DragDiffusion's scripts and experiments.run write).
Missing edits are listed and counted as status=skipped, never fatal. Each edit is scored by the same
`Evaluator.score` a job calls (one loop over the declared metrics); Drag-Back needs the method, so not here.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from dragbench import load_bench, load_drag100
from dragbench.backbone import MissingWeightsError
from dragbench.drag100 import is_drag100_root
from eval.aggregate import summarize
from eval.evaluator import Evaluator, official_evaluator, tiny_evaluator, toy_evaluator
from eval.mean_distance import MD_VARIANTS
from eval.metrics import MEAN_DISTANCE, METRICS, Metric

log = logging.getLogger(__name__)

EDIT_FILE = "dragged_image.png"  # the official output layout's file name
PAIR_COLUMNS = ["sample_id", "category", "pair", "handle_x", "handle_y", "target_x", "target_y"]
EVALUATORS = {
    "official": official_evaluator,
    "tiny": tiny_evaluator,
    "toy": toy_evaluator,
}  # = conf/eval/{official,tiny,toy}.yaml


def score_folder(
    edits_dir: str | Path, bench_root: str | Path, evaluator: Evaluator
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Score every bench sample's edit found under `edits_dir`.

    Args:
        edits_dir: folder with `<category>/<name>/dragged_image.png`.
        bench_root: DragBench root (`<category>/<name>/{original_image.png, meta_data.pkl}`) or a Drag100 root
            (`<name>/{original.jpg, mask.png, points.json}`; edits then at `drag100/<name>/` under edits_dir).
        evaluator: the metrics (e.g. `official_evaluator()`, or one with an injected featurizer).

    Returns:
        samples_df: one row per bench sample (sample_id, category, status, error, image_fidelity,
            mean_distance, n_pairs, resized_from, metric_version, weights, md_variant).
        pairs_df: one row per scored pair (handle, target and matched (x, y), distance, labels).
        summary: `eval.aggregate.summarize` of both, plus the labels and `missing` (sample ids without edit).
    """
    edits_dir = Path(edits_dir)
    labels = evaluator.describe()
    sample_rows, pair_rows, missing = [], [], []
    samples = load_drag100(bench_root) if is_drag100_root(bench_root) else load_bench(bench_root)
    for sample in samples:
        row = dict(evaluator.sample_row(sample), resized_from="",  # the columns a job's rows start with
                   **{m.sample_column: np.nan for m in evaluator.metrics if m.sample_column is not None})
        path = edits_dir / sample.sample_id / EDIT_FILE
        if not path.is_file():
            missing.append(sample.sample_id)
            row.update(status="skipped", error=f"missing edit {path}")
        else:
            try:
                with Image.open(path) as img:
                    edited = np.asarray(img.convert("RGB"))
                score = evaluator.score(sample, edited)  # the scoring a job does (eval.metrics loop)
                score.check_finite(sample.sample_id)
            except (OSError, ValueError, RuntimeError, FloatingPointError) as err:  # one bad edit: go on
                log.warning("%s: scoring failed: %s", sample.sample_id, err)
                row.update(status="failed", error=f"{type(err).__name__}: {err}")
            else:
                row.update(**score.sample_columns(),
                           resized_from="x".join(map(str, score.resized_from_hw or ())))
                pair_rows += [dict(pair, **labels) for pair in score.pair_rows(sample)]
        shown = [m for m in evaluator.metrics if m.sample_column is not None]
        values = " ".join(f"{m.label}={row[m.sample_column]:.4g}" for m in shown)
        log.info("%s: %s %s", sample.sample_id, row["status"], values)
        sample_rows.append(dict(row, **labels))
    samples_df = pd.DataFrame(sample_rows)
    pair_columns = [*PAIR_COLUMNS, *(c for m in evaluator.metrics for c in m.pair_columns)]
    pairs_df = pd.DataFrame(pair_rows, columns=[*pair_columns, *labels])
    summary = dict(summarize(samples_df, pairs_df, metrics=evaluator.metrics), **labels, missing=missing)
    return samples_df, pairs_df, summary


def _format_metric(metric: Metric, summary: dict) -> str:
    value, (low, high) = summary[metric.name], summary[f"{metric.name}_ci"]
    digits = metric.digits if metric.per == "pair" else 4
    if metric.per == "pair":
        detail = f"unit={summary['md_scale']}, {summary['n_pairs']} pairs"
        if metric is MEAN_DISTANCE:
            detail = f"variant={summary['md_variant']}, {detail}"
    else:
        detail = f"{summary['n_samples']} samples"
    return f"{metric.label}  {value:.{digits}f}  (95% CI {low:.{digits}f}–{high:.{digits}f}; {detail})"


def _format(summary: dict) -> str:
    lines = [
        *(_format_metric(m, summary) for m in METRICS if m.name in summary),
        f"weights={summary['weights']}  metric_version={summary['metric_version']}"
        + ("  (random weights: NOT comparable to published numbers)" if summary["weights"] != "real" else ""),
        f"failed={summary['n_failed']} skipped={summary['n_skipped']} unsupported={summary['n_unsupported']}",
    ]
    if summary["missing"]:
        lines.append(f"missing edits: {len(summary['missing'])}: {', '.join(summary['missing'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.score", description=__doc__.splitlines()[0])
    parser.add_argument("edits_dir", type=Path, help="folder with <category>/<name>/dragged_image.png")
    parser.add_argument("--bench", type=Path, required=True, help="DragBench root")
    parser.add_argument("--eval", choices=sorted(EVALUATORS), default="official", help="metric models")
    parser.add_argument("--variant", choices=MD_VARIANTS, default="standard", help="MD variant")
    parser.add_argument("--out", type=Path, default=None, help="where CSVs/JSON go (default: EDITS_DIR)")
    parser.add_argument("--pretrained", default=None, help="eval=official: SD-2.1 hub id or folder")
    parser.add_argument("--local-files-only", action="store_true", help="eval=official only: never download")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.edits_dir.is_dir():
        print(f"error: edits folder {args.edits_dir} does not exist", file=sys.stderr)
        return 2
    extra = {}
    if args.eval == "official":
        extra = {"local_files_only": args.local_files_only}
        if args.pretrained is not None:
            extra["pretrained"] = args.pretrained
    elif args.pretrained is not None or args.local_files_only:
        parser.error("--pretrained / --local-files-only apply to --eval official only")
    try:
        evaluator = EVALUATORS[args.eval](variant=args.variant, **extra)
    except MissingWeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    samples_df, pairs_df, summary = score_folder(args.edits_dir, args.bench, evaluator)
    out = args.out or args.edits_dir
    out.mkdir(parents=True, exist_ok=True)
    samples_df.to_csv(out / "scores_samples.csv", index=False)
    pairs_df.to_csv(out / "scores_pairs.csv", index=False)
    (out / "scores_metrics.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    print(_format(summary))
    print(f"wrote {out / 'scores_samples.csv'}, {out / 'scores_pairs.csv'}, {out / 'scores_metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
