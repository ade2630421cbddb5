"""Every metric the harness reports, declared once: what it is (data), how one edit is measured (a function).

The results store, bootstrap aggregation (eval.aggregate), metrics.json, the sweep summary, figures, compare,
W&B and `python -m eval.score` loop over `METRICS`; none of them names a metric. Adding a metric = one
`Metric(...)` declaration appended to `METRICS` plus its function (README "Adding a metric").

Aggregation follows from `per`: a per-pair metric is the mean over every pair of every `ok` sample (a 3-pair
sample weighs 3x; results.csv holds each sample's own mean), a per-sample metric the mean over `ok` samples;
CIs resample samples with replacement in both cases (eval.aggregate).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from torch import Tensor

from dragbench.sample import DragSample
from eval.dai import DAI_GAMMAS, border_pairs, dai
from eval.mean_distance import mean_distance
from eval.toy_ground_truth import gt_pair_distances, has_ground_truth

MD_UNIT = "md_scale"  # the metric is in the unit named by the md_scale column (px@<width>w or normalised)


@dataclass
class ScoringInputs:
    """What a metric function may read about one edit (built by eval.evaluator.Evaluator.score).

    Attributes:
        sample: the sample as edited (original image, prompt, (x, y) handles/targets, mask, meta).
        edited: uint8 (H, W, 3) edited image at the sample's size.
        original_features: () -> (C, h, w) features of the original image (cached).
        featurize: uint8 image -> (C, h, w) features (DIFT, or an exact featurizer in tests).
        fidelity: (original, other) -> 1 − LPIPS.
        variant: the MD variant (eval.mean_distance.MD_VARIANTS).
        dragged_back: the edit of `edited` with handles and targets swapped (Drag-Back), else None.
        regenerated_box: methods.base.EditResult.regenerated_box: (x0, y0, x1, y1) of `edited` the method
            produced (the rest is the original pasted back), None = nothing was pasted back.
    """

    sample: DragSample
    edited: np.ndarray
    original_features: Callable[[], Tensor]
    featurize: Callable[[np.ndarray], Tensor]
    fidelity: Callable[[np.ndarray, np.ndarray], float]
    variant: str
    dragged_back: np.ndarray | None = None
    regenerated_box: tuple[int, int, int, int] | None = None


@dataclass
class Measured:
    """One metric on one edit: a float (per sample) or (N,) values (per pair), + extra pairs.csv columns."""

    value: float | np.ndarray
    pair_columns: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    """A metric as data.

    Attributes:
        name: its key in metrics.json (`<name>`, `<name>_ci`), summary.csv and the comparison table.
        per: "pair" (one value per handle->target pair) or "sample" (one per edited sample).
        higher_is_better: direction (drawn as ↑ / ↓).
        label: short label for axes and tables, e.g. "MD".
        wandb_key: W&B summary group (`<key>/all`, `<key>/ci`, `<key>/<category>`).
        compute: ScoringInputs -> Measured.
        unit: MD_UNIT when the value is in the md_scale unit (distances), None when unitless.
        needs_ground_truth: only defined on samples with a known true edit (toy world); NaN elsewhere and
            reported only when some value is finite.
        only_where_defined: like ground truth, NaN where the edit does not define it (IF unpasted: a method
            that pastes nothing back) and reported only when some value is finite.
        opt_in: the `eval.<key>` flag that turns the metric on (None = always computed).
        sample_column: results.csv column (a per-pair metric: the sample's mean), None = not in results.csv.
        pair_column: pairs.csv column of a per-pair metric.
        extra_pair_columns: further pairs.csv columns its function returns (before pair_column).
        digits: decimals in printed tables.
        in_figures: drawn in the Fig. 7 panels (experiments.figures); False keeps a metric on its own scale
            (DAI) off the panels' shared MD / fidelity axes. Tables, metrics.json and W&B carry it either way.
    """

    name: str
    per: Literal["pair", "sample"]
    higher_is_better: bool
    label: str
    wandb_key: str
    compute: Callable[[ScoringInputs], Measured]
    unit: str | None = None
    needs_ground_truth: bool = False
    only_where_defined: bool = False
    opt_in: str | None = None
    sample_column: str | None = None
    pair_column: str | None = None
    extra_pair_columns: tuple[str, ...] = ()
    digits: int = 3
    in_figures: bool = True

    def __post_init__(self) -> None:
        if self.per not in ("pair", "sample"):
            raise ValueError(f"metric {self.name}: per must be 'pair' or 'sample', got {self.per!r}")
        if self.per == "pair" and self.pair_column is None:
            raise ValueError(
                f"metric {self.name}: a per-pair metric needs a pair_column (its pairs.csv column)"
            )
        if self.per == "sample" and self.sample_column is None:
            raise ValueError(f"metric {self.name}: a per-sample metric needs a sample_column (results.csv)")

    @property
    def display(self) -> str:
        """Label with its direction, e.g. "MD (↓)"."""
        return f"{self.label} ({'↑' if self.higher_is_better else '↓'})"

    @property
    def pair_columns(self) -> tuple[str, ...]:
        """Its pairs.csv columns, in order (none for a per-sample metric)."""
        return (*self.extra_pair_columns, self.pair_column) if self.per == "pair" else ()

    @property
    def partial(self) -> bool:
        """NaN on some edits by definition (not an error); reported only where some value is finite."""
        return self.needs_ground_truth or self.only_where_defined

    @property
    def optional(self) -> bool:
        """Reported only where it exists (ground truth) or was asked for (opt-in)."""
        return self.partial or self.opt_in is not None


# ---- the functions ---------------------------------------------------------------------------------
def _matched_distances(inputs: ScoringInputs, image: np.ndarray, targets: np.ndarray) -> Measured:
    """Find each handle's original feature in `image` (DIFT argmax) and measure its distance to `targets`."""
    sample = inputs.sample
    feat_other = inputs.featurize(image)
    distances, matched_xy = mean_distance(
        inputs.original_features().to(feat_other.device, feat_other.dtype),
        feat_other,
        sample.handles,
        targets,
        (sample.height, sample.width),
        variant=inputs.variant,
        mask=sample.mask,
    )
    return Measured(distances, {"matched_x": matched_xy[:, 0], "matched_y": matched_xy[:, 1]})


def measure_mean_distance(inputs: ScoringInputs) -> Measured:
    """MD: distance from where each handle's feature lands in the edit to its target (protocol §3)."""
    return _matched_distances(inputs, inputs.edited, inputs.sample.targets)


def measure_image_fidelity(inputs: ScoringInputs) -> Measured:
    """IF: 1 − LPIPS(original, edited)."""
    return Measured(float(inputs.fidelity(inputs.sample.image, inputs.edited)))


def measure_image_fidelity_unpasted(inputs: ScoringInputs) -> Measured:
    """IF of a pasting method's own pixels: 1 − LPIPS(original, edited) inside `regenerated_box` only, so
    pixels it pasted back from the input (DragGAN outside its square crop) do not count as perfectly kept; IF
    itself when the box is the whole image. NaN without a box: nothing was pasted (the method regenerated
    the whole image, so its IF is already "unpasted"), or eval.score, which cannot know."""
    original, edited, box = inputs.sample.image, inputs.edited, inputs.regenerated_box
    if box is None:
        return Measured(float("nan"))
    if tuple(box) == (0, 0, inputs.sample.width, inputs.sample.height):
        return Measured(float(inputs.fidelity(original, edited)))  # the same call as IF (memoised)
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= inputs.sample.width and 0 <= y0 < y1 <= inputs.sample.height):
        raise ValueError(f"{inputs.sample.sample_id}: regenerated_box {box} is not inside the image")
    return Measured(float(inputs.fidelity(original[y0:y1, x0:x1], edited[y0:y1, x0:x1])))


def measure_gt_distance(inputs: ScoringInputs) -> Measured:
    """Toy world: distance of each handle's content to its target; NaN without ground truth."""
    if not has_ground_truth(inputs.sample):
        return Measured(np.full(inputs.sample.n_pairs, np.nan))
    return Measured(gt_pair_distances(inputs.sample, inputs.edited)[0])


def dai_measure(gamma: int) -> Callable[[ScoringInputs], Measured]:
    """DAI_γ (GoodDrag, protocol §11) of each pair: squared RGB patch error, handle in the original vs target in
    the edit, in [0, 1] units (eval/dai.py); pairs.csv also gets `dai_<γ>_border` (1 = patch edge-padded)."""

    def measure(inputs: ScoringInputs) -> Measured:
        sample = inputs.sample
        values = dai(sample.image, inputs.edited, sample.handles, sample.targets, gamma)
        border = border_pairs(sample.handles, sample.targets, sample.height, sample.width, gamma)
        return Measured(values, {f"dai_{gamma}_border": border.astype(np.int64)})

    return measure


def _dragged_back(inputs: ScoringInputs) -> np.ndarray:
    if inputs.dragged_back is None:
        raise ValueError(
            f"{inputs.sample.sample_id}: Drag-Back metrics need the back-dragged image; the job makes "
            "it when eval.drag_back=true (python -m eval.score cannot: it has no method)"
        )
    return inputs.dragged_back


def measure_drag_back_fidelity(inputs: ScoringInputs) -> Measured:
    """Drag-Back (DragLoRA): 1 − LPIPS(original, the edit dragged back with handles/targets swapped)."""
    return Measured(float(inputs.fidelity(inputs.sample.image, _dragged_back(inputs))))


def measure_drag_back_distance(inputs: ScoringInputs) -> Measured:
    """Drag-Back: distance from where each handle's original feature lands in the back-dragged image to the
    handle itself (0 = the content came back exactly)."""
    back = _matched_distances(inputs, _dragged_back(inputs), inputs.sample.handles)
    return Measured(back.value)


# ---- the declarations --------------------------------------------------------------------------------
MEAN_DISTANCE = Metric(
    "mean_distance",
    "pair",
    False,
    "MD",
    "md",
    measure_mean_distance,
    unit=MD_UNIT,
    sample_column="mean_distance",
    pair_column="distance",
    extra_pair_columns=("matched_x", "matched_y"),  # where the DIFT matching found each handle
    digits=2,
)
IMAGE_FIDELITY = Metric(
    "image_fidelity", "sample", True, "IF", "if", measure_image_fidelity, sample_column="image_fidelity"
)
IMAGE_FIDELITY_UNPASTED = Metric(
    "image_fidelity_unpasted",
    "sample",
    True,
    "IF unpasted",
    "if_unpasted",
    measure_image_fidelity_unpasted,
    only_where_defined=True,
    sample_column="image_fidelity_unpasted",
)
GT_DISTANCE = Metric(
    "gt_distance",
    "pair",
    False,
    "GT distance",
    "gt",
    measure_gt_distance,
    unit=MD_UNIT,
    needs_ground_truth=True,
    pair_column="gt_distance",
    digits=2,
)
DRAG_BACK_FIDELITY = Metric(
    "drag_back_fidelity",
    "sample",
    True,
    "Drag-Back IF",
    "drag_back_if",
    measure_drag_back_fidelity,
    opt_in="drag_back",
    sample_column="drag_back_fidelity",
)
DRAG_BACK_DISTANCE = Metric(
    "drag_back_distance",
    "pair",
    False,
    "Drag-Back MD",
    "drag_back_md",
    measure_drag_back_distance,
    unit=MD_UNIT,
    opt_in="drag_back",
    sample_column="drag_back_distance",
    pair_column="drag_back_distance",
    digits=2,
)
DAI_METRICS = tuple(  # GoodDrag's DAI at γ = 1, 10, 20 (eval/dai.py); on by default (eval.dai=true)
    Metric(
        f"dai_{gamma}",
        "pair",
        False,
        f"DAI γ={gamma}",
        f"dai_{gamma}",
        dai_measure(gamma),
        opt_in="dai",
        sample_column=f"dai_{gamma}",
        pair_column=f"dai_{gamma}",
        extra_pair_columns=(f"dai_{gamma}_border",),
        digits=4,
        in_figures=False,  # [0, 1] squared-error units: neither MD's pixels nor a fidelity (higher = better)
    )
    for gamma in DAI_GAMMAS
)
METRICS: tuple[Metric, ...] = (
    MEAN_DISTANCE,
    IMAGE_FIDELITY,
    IMAGE_FIDELITY_UNPASTED,
    GT_DISTANCE,
    *DAI_METRICS,
    DRAG_BACK_FIDELITY,
    DRAG_BACK_DISTANCE,
)
CORE_METRICS = tuple(m for m in METRICS if m.opt_in is None)  # computed by every evaluator


def active_metrics(**flags: bool) -> tuple[Metric, ...]:
    """The declared metrics an evaluator computes: the core ones plus those whose opt-in flag is True.

    Raises:
        ValueError: a flag no metric opts in with.
    """
    known = {m.opt_in for m in METRICS if m.opt_in is not None}
    unknown = sorted(set(flags) - known)
    if unknown:
        raise ValueError(
            f"unknown metric flags {unknown}; declared opt-ins: {sorted(known)} (eval/metrics.py)"
        )
    return tuple(m for m in METRICS if m.opt_in is None or flags.get(m.opt_in, False))


def metric_named(name: str) -> Metric:
    """The declared metric called `name`.

    Raises:
        KeyError: no such metric (the message lists the declared ones).
    """
    for metric in METRICS:
        if metric.name == name:
            return metric
    raise KeyError(f"no metric {name!r}; declared: {', '.join(m.name for m in METRICS)} (eval/metrics.py)")
