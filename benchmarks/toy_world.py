"""Toy-world benchmark: does DragDiffusion move objects where they should go? (ground truth, dragbench.toy)

Stage `edit` (GPU or CPU; needs torch/diffusers/peft only) writes, per method, the edited images of n toy
samples to OUT/edits_<method>.npz: `recon` (DDIM inversion 35/50 + denoising, no edit), `identity`, and
DragDiffusion with (`dd_lora`) and without (`dd_nolora`) LoRA, official defaults otherwise (protocol §2).
Any other name is a `conf/method/<name>.yaml` (e.g. `--methods gooddrag,fastdrag`), run with its defaults on
the toy backbone without the on-disk cache, so `seconds_per_sample` is the whole edit.
Stage `score` (CPU) regenerates the samples from (n, seed) and writes OUT/toy_world.json: reconstruction PSNR,
GT distance (eval/toy_ground_truth.py), lost objects, pixel metrics vs the GT edit, MD (DIFT features from the
toy model itself: labelled `md_toy_dift`, not the official SD-2.1 MD), each with 95 % bootstrap CIs, and the
paired ratio GT distance(method) / GT distance(identity) over the same samples (and / GT distance of
DragDiffusion LoRA 80 when `dd_lora` was edited into the same OUT).
Stage `figure` draws OUT/toy_examples.png/.pdf: the first samples' drags, their ground-truth edits and every
method's edit, one row each (docs/toy_examples.png is this figure for the committed numbers).

    PYTHONPATH=. python benchmarks/toy_world.py --stage all --device cuda --n 24 --out OUT
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from dragbench.backbone import Backbone
from dragbench.diffusion.ddim import ddim_denoise, ddim_invert
from dragbench.sample import DragSample
from dragbench.toy.model import load_toy_backbone
from dragbench.toy.samples import toy_samples

log = logging.getLogger("benchmarks.toy_world")

INVERSION_STEP, N_INFERENCE_STEPS = 35, 50  # protocol §2
N_BOOT, CI, BOOT_SEED = 2000, 0.95, 0
BUILT_IN = ("recon", "identity", "dd_nolora", "dd_lora")
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
PAIRED_REFERENCE = "dd_lora"  # the second paired ratio of `score`: GT distance vs DragDiffusion, LoRA 80
LABELS = {"dd_nolora": "DragDiffusion\nno LoRA", "dd_lora": "DragDiffusion\nLoRA 80"}  # rows of the figure


@torch.no_grad()
def reconstruct(bb: Backbone, sample: DragSample) -> np.ndarray:
    """VAE mean → DDIM inversion 35/50 with the prompt → 35 DDIM steps back → decode; uint8 (H, W, 3)."""
    x = torch.tensor(sample.image, device=bb.device).permute(2, 0, 1)[None].to(bb.dtype) / 127.5 - 1
    z0 = bb.vae.encode(x).latent_dist.mean * bb.latent_scale  # (1, 4, h, w)
    cond = bb.condition(sample.prompt)
    zt = ddim_invert(bb, z0, cond, bb.scheduler.config, N_INFERENCE_STEPS, INVERSION_STEP)
    z0_hat = ddim_denoise(bb, zt, cond, bb.scheduler.config, N_INFERENCE_STEPS, INVERSION_STEP)
    out = bb.vae.decode(z0_hat / bb.latent_scale).sample.clamp(-1, 1)  # (1, 3, H, W)
    return ((out[0].permute(1, 2, 0).float().cpu().numpy() + 1) * 127.5).round().astype(np.uint8)


def configured_method(name: str, bb: Backbone):
    """`conf/method/<name>.yaml` with its defaults, built on `bb` (no on-disk cache)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import open_dict

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("config", overrides=[f"method={name}", "logger=none", f"device={bb.device.type}"])
    node = cfg.method
    overrides = {key: value for key, value in (("backbone", bb), ("cache", None)) if key in node}
    # Passed to the partial, not to instantiate: instantiate merges its kwargs into the config, which turns the
    # Backbone dataclass into a config node and builds `backbone` from the node's own `_target_`.
    with open_dict(node):
        for key in overrides:
            del node[key]
    return instantiate(node, _convert_="all", _partial_=True)(**overrides)


def _editor(name: str, bb: Backbone):
    if name not in BUILT_IN:
        method = configured_method(name, bb)
        return lambda s: method.edit(s).image
    if name == "recon":
        return lambda s: reconstruct(bb, s)
    if name == "identity":
        return lambda s: s.image.copy()
    from methods.dragdiffusion.method import DragDiffusion

    dd = DragDiffusion(bb, lora_steps=0 if name == "dd_nolora" else 80)
    return lambda s: dd.edit(s).image


def run_edits(samples: list[DragSample], bb: Backbone, methods: list[str], out: Path) -> None:
    """Edit every sample with every method; OUT/edits_<method>.npz is rewritten after each sample."""
    for name in methods:
        edit = _editor(name, bb)
        images, seconds = [], []
        for s in samples:
            start = time.perf_counter()
            images.append(edit(s))
            seconds.append(time.perf_counter() - start)
            tmp = out / f"edits_{name}.tmp.npz"
            np.savez_compressed(tmp, images=np.stack(images), seconds=np.array(seconds))
            tmp.replace(out / f"edits_{name}.npz")
        log.info("%s: %d samples, %.1f s/sample", name, len(samples), float(np.mean(seconds)))


def _ci(values: np.ndarray) -> list[float]:
    from eval.aggregate import bootstrap_ci

    return list(bootstrap_ci(values, N_BOOT, BOOT_SEED, CI))


def score(samples: list[DragSample], out: Path, device: str) -> dict:
    """Metrics of every edits_<method>.npz in `out` (samples beyond a partial file are left out)."""
    from eval.aggregate import ratio_bootstrap_ci
    from eval.dift import DiftFeaturizer
    from eval.mean_distance import mean_distance
    from eval.toy_ground_truth import gt_image_metrics, gt_pair_distances, psnr

    featurize = DiftFeaturizer(load_toy_backbone(device=device))
    feats0 = [featurize(s.image, s.prompt) for s in samples]
    ident = np.array([gt_pair_distances(s, s.image)[0].mean() for s in samples])
    report: dict = {"n_samples": len(samples), "pairs": int(sum(s.n_pairs for s in samples)), "ci": CI,
                    "n_boot": N_BOOT}
    names = [*BUILT_IN, *sorted(p.stem[len("edits_"):] for p in out.glob("edits_*.npz"))]
    gt_of: dict[str, np.ndarray] = {}  # per-sample GT distance of each method, for the paired ratios
    for name in dict.fromkeys(names):  # built-ins first, then every other method edited into `out`
        path = out / f"edits_{name}.npz"
        if not path.exists() or path.stem.endswith(".tmp"):
            continue
        data = np.load(path)
        images, n = data["images"], len(data["images"])
        rows = []
        for s, img, f0 in zip(samples[:n], images, feats0[:n], strict=True):
            dist, found = gt_pair_distances(s, img)
            md, _ = mean_distance(f0, featurize(img, s.prompt), s.handles, s.targets, (s.height, s.width))
            rows.append({"gt": dist.mean(), "found": found.all(), "md": md.mean(),
                         "psnr_orig": psnr(img, s.image), **gt_image_metrics(s, img)})
        col = {k: np.array([r[k] for r in rows], dtype=np.float64) for k in rows[0]}
        gt_of[name] = col["gt"]
        lo, hi = ratio_bootstrap_ci(col["gt"], ident[:n], N_BOOT, BOOT_SEED, CI)
        report[name] = {
            "n": n,
            "seconds_per_sample": float(data["seconds"].mean()),
            "gt_distance": float(col["gt"].mean()), "gt_distance_ci": _ci(col["gt"]),
            "gt_ratio_vs_identity": float(col["gt"].sum() / ident[:n].sum()), "gt_ratio_ci": [lo, hi],
            "md_toy_dift": float(col["md"].mean()), "md_toy_dift_ci": _ci(col["md"]),
            "lost_fraction": float(1 - col["found"].mean()),
            "lost_objects_any": float(col["lost_objects"].sum()),
            "psnr_vs_original": float(col["psnr_orig"].mean()),
            "psnr_vs_gt_edit": float(col["gt_psnr"].mean()),
            "psnr_outside_mask_vs_gt": float(np.nanmean(col["gt_psnr_outside_mask"])),
        }
    # vs DragDiffusion (LoRA 80, the paper default): paired over the scenes both edited, same bootstrap draws
    reference = gt_of.get(PAIRED_REFERENCE)
    for name, gt in gt_of.items():
        if reference is None or name == PAIRED_REFERENCE:
            continue
        m = min(len(gt), len(reference))
        lo, hi = ratio_bootstrap_ci(gt[:m], reference[:m], N_BOOT, BOOT_SEED, CI)
        report[name]["gt_ratio_vs_dragdiffusion"] = float(gt[:m].sum() / reference[:m].sum())
        report[name]["gt_ratio_vs_dragdiffusion_ci"] = [lo, hi]
    (out / "toy_world.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def example_figure(samples: list[DragSample], out: Path, n_cols: int = 8) -> list[Path]:
    """Rows: the drag (handles red, targets blue, mask tinted), the GT edit, each method's edit in `out`."""
    from matplotlib.figure import Figure

    from dragbench.toy.samples import GT_KEY
    from dragbench.visualize import draw_drag
    from experiments.figures import save_figure

    def drag(s: DragSample, k: int = 4) -> np.ndarray:  # drawn k x larger: 64 px leaves no room for the dots
        big = s.image.repeat(k, 0).repeat(k, 1)
        return draw_drag(big, s.mask.repeat(k, 0).repeat(k, 1), s.handles * k + k / 2, s.targets * k + k / 2)

    shown = samples[:n_cols]
    rows = [("drag", [drag(s) for s in shown]),
            ("ground truth", [s.meta[GT_KEY]["gt_image"] for s in shown])]
    edited = sorted(p.stem[len("edits_"):] for p in out.glob("edits_*.npz") if not p.stem.endswith(".tmp"))
    for name in [*LABELS, *(n for n in edited if n not in BUILT_IN)]:  # recon / identity look like the input
        if (out / f"edits_{name}.npz").exists():
            rows.append((LABELS.get(name, name), list(np.load(out / f"edits_{name}.npz")["images"][: len(shown)])))
    fig = Figure(figsize=(1.2 * len(shown), 1.25 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), len(shown), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            if c < len(images):
                ax.imshow(images[c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, fontsize=7)
    return save_figure(fig, out / "toy_examples")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["edit", "score", "figure", "all"], default="all")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--seed", type=int, default=0, help="toy-sample seed")
    p.add_argument("--methods", default=",".join(BUILT_IN), help="built-ins or conf/method/<name> names")
    p.add_argument("--weights", default=None, help="toy pipeline folder (default: the committed weights)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    samples = toy_samples(args.n, seed=args.seed)
    if args.stage in ("edit", "all"):
        bb = load_toy_backbone(device=args.device, weights_dir=args.weights)
        run_edits(samples, bb, args.methods.split(","), out)
    if args.stage in ("score", "all"):
        report = score(samples, out, args.device)
        print(json.dumps({k: v for k, v in report.items() if isinstance(v, dict)}, indent=1))
    if args.stage in ("figure", "all"):
        print("figure:", *example_figure(samples, out))


if __name__ == "__main__":
    main()
