"""`python -m dragbench`: validate, summarise, visualise and synthesise DragBench-layout folders (protocol §1).

Subcommands: `validate ROOT`, `stats ROOT`, `show SAMPLE_DIR --out FILE.png` (each reads DragBench or Drag100,
detected or `--format`),
`synth OUT --n N --size S --seed K`, `download ROOT [--url URL] [--sha256 HEX]`,
`weights [--all] [overrides...]` (exit 1 if a needed weight is missing).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from dragbench.bench_io import find_sample_dirs, load_sample
from dragbench.drag100 import find_drag100_dirs, is_drag100_root, load_drag100_sample
from dragbench.sample import DragSample, InvalidSampleError
from dragbench.synth import write_synthetic_bench
from dragbench.visualize import draw_drag

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _reason(err: InvalidSampleError) -> str:
    return getattr(err, "reason", str(err))


FORMATS = ("auto", "dragbench", "drag100")  # --format: on-disk layouts the data tools read


def bench_format(root: Path, fmt: str = "auto") -> str:
    """The layout of a bench root: "drag100" (GoodDrag: <root>/<name>/points.json) when `fmt` is "auto" and
    some folder directly under root holds a points.json, else "dragbench"; an explicit `fmt` is returned."""
    if fmt != "auto":
        return fmt
    return "drag100" if is_drag100_root(root) else "dragbench"


def _load_all(root: Path, fmt: str = "auto") -> tuple[list[DragSample], list[tuple[str, str]]]:
    """Load every sample folder under root; returns (valid samples, [(sample_id, reason)] of invalid ones)."""
    samples, bad = [], []
    drag100 = bench_format(root, fmt) == "drag100"
    for sample_dir in find_drag100_dirs(root) if drag100 else find_sample_dirs(root):
        try:
            samples.append(load_drag100_sample(sample_dir) if drag100 else load_sample(sample_dir))
        except InvalidSampleError as err:
            where = f"drag100/{sample_dir.name}" if drag100 else f"{sample_dir.parent.name}/{sample_dir.name}"
            bad.append((where, _reason(err)))
    return samples, bad


def bench_stats(samples: Sequence[DragSample]) -> dict:
    """Counts per category (samples, pairs, empty masks), image sizes "WxH" and totals."""
    per_category: dict[str, Counter] = {}
    for s in samples:
        c = per_category.setdefault(s.category, Counter())
        c["samples"] += 1
        c["pairs"] += s.n_pairs
        c["empty_masks"] += int(not s.mask.any())
    return {
        "per_category": {k: dict(per_category[k]) for k in sorted(per_category)},
        "sizes": Counter(f"{s.width}x{s.height}" for s in samples),
        "samples": len(samples),
        "pairs": sum(s.n_pairs for s in samples),
        "empty_masks": sum(int(not s.mask.any()) for s in samples),
    }


def format_stats(stats: dict) -> list[str]:
    """Text lines of :func:`bench_stats`; the last line is exactly `total: N samples, M pairs`."""
    width = max([len("category"), *map(len, stats["per_category"])])
    lines = [f"{'category':<{width}}  samples  pairs  empty_masks"]
    for name, c in stats["per_category"].items():
        lines.append(f"{name:<{width}}  {c['samples']:>7}  {c['pairs']:>5}  {c.get('empty_masks', 0):>11}")
    sizes = ", ".join(f"{size} ({n})" for size, n in stats["sizes"].most_common())
    lines.append(f"image sizes (WxH): {sizes or '-'}")
    lines.append(f"empty masks: {stats['empty_masks']}")
    lines.append(f"total: {stats['samples']} samples, {stats['pairs']} pairs")
    return lines


def _cmd_validate(args: argparse.Namespace) -> int:
    samples, bad = _load_all(args.root, args.format)
    for sample_id, reason in bad:
        print(f"{sample_id}: {reason}")
    if bad:
        print(f"{len(bad)} of {len(samples) + len(bad)} samples invalid", file=sys.stderr)
        return EXIT_INVALID
    print(f"all {len(samples)} samples valid ({sum(s.n_pairs for s in samples)} pairs)")
    return EXIT_OK


def _cmd_stats(args: argparse.Namespace) -> int:
    samples, bad = _load_all(args.root, args.format)
    for sample_id, reason in bad:
        print(f"skipped {sample_id}: {reason}", file=sys.stderr)
    for line in format_stats(bench_stats(samples)):
        print(line)
    return EXIT_INVALID if bad else EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    try:
        drag100 = bench_format(args.sample_dir, args.format) == "drag100"
        sample = (load_drag100_sample if drag100 else load_sample)(args.sample_dir)
    except InvalidSampleError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw_drag(sample.image, sample.mask, sample.handles, sample.targets)).save(args.out)
    print(f"wrote {args.out} ({sample.sample_id}, {sample.n_pairs} pair{'s' if sample.n_pairs != 1 else ''})")
    return EXIT_OK


def _cmd_synth(args: argparse.Namespace) -> int:
    dirs = write_synthetic_bench(args.out, n=args.n, size=args.size, seed=args.seed)
    print(f"wrote {len(dirs)} synthetic samples to {args.out}")
    return EXIT_OK


def _cmd_download(args: argparse.Namespace) -> int:
    from dragbench.download import DRAGBENCH_URL, DownloadError, download_dragbench

    try:
        got = download_dragbench(args.root, url=args.url or DRAGBENCH_URL, sha256=args.sha256)
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    check = "verified" if args.sha256 else "not verified: pin it with --sha256"
    print(f"{got.archive}: {got.size} bytes, sha256 {got.sha256} ({check})")
    print(f"all {got.n_samples} samples valid ({got.n_pairs} pairs) in {args.root}")
    return EXIT_OK


def _cmd_weights(args: argparse.Namespace) -> int:
    # Composing Hydra configs is experiments/' job (DESIGN.md); imported here only, to keep the CLI light.
    from experiments.weights_preflight import weights_table

    lines, ok = weights_table(args.overrides, every_option=args.all)
    print("\n".join(lines))
    return EXIT_OK if ok else EXIT_INVALID


_FORMAT_HELP = "on-disk layout (default auto: drag100 when sample folders hold points.json)"


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `python -m dragbench`."""
    parser = argparse.ArgumentParser(prog="python -m dragbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check every sample; exit 1 and one line per invalid sample")
    p.add_argument("root", type=Path, help="bench root: <root>/<category>/<name>/ (Drag100: <root>/<name>/)")
    p.add_argument("--format", choices=FORMATS, default="auto", help=_FORMAT_HELP)
    p.set_defaults(func=_cmd_validate)
    p = sub.add_parser("stats", help="samples and pairs per category, image sizes, empty masks")
    p.add_argument("root", type=Path, help="bench root: <root>/<category>/<name>/ (Drag100: <root>/<name>/)")
    p.add_argument("--format", choices=FORMATS, default="auto", help=_FORMAT_HELP)
    p.set_defaults(func=_cmd_stats)
    p = sub.add_parser("show", help="draw a sample's mask and drags to a PNG")
    p.add_argument("sample_dir", type=Path, help="a sample folder <root>/<category>/<name>/")
    p.add_argument("--out", type=Path, required=True, help="output PNG")
    p.add_argument("--format", choices=FORMATS, default="auto", help=_FORMAT_HELP)
    p.set_defaults(func=_cmd_show)
    p = sub.add_parser("synth", help="write a synthetic bench in the official layout")
    p.add_argument("out", type=Path, help="bench root to write")
    p.add_argument("--n", type=int, default=10, help="number of samples (default 10)")
    p.add_argument("--size", type=int, default=64, help="image width in pixels (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.set_defaults(func=_cmd_synth)
    p = sub.add_parser("download", help="fetch DragBench's release zip (resumable), verify, unpack, validate")
    p.add_argument("root", type=Path, help="bench root to fill: <root>/<category>/<name>/")
    p.add_argument("--url", default=None, help="zip URL (default: the DragDiffusion v0.1.1 release asset)")
    p.add_argument("--sha256", default=None, help="expected sha256 of the zip; a mismatch deletes it, exit 1")
    p.set_defaults(func=_cmd_download)
    p = sub.add_parser("weights", help="each weight file a config needs, where it is looked for, is it there")
    p.add_argument("overrides", nargs="*", help="overrides as for experiments.run, e.g. method=draggan")
    p.add_argument("--all", action="store_true", help="every option of the model/method/eval groups")
    p.set_defaults(func=_cmd_weights)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 invalid samples, 2 unusable arguments)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
