"""Validation rules for DragBench samples (protocol §1 on-disk format) and Drag100 files (protocol §11).

Each broken rule raises one :class:`InvalidSampleError` whose message names the file, the reason and the
value seen; ``err.reason`` holds the same text without the directory (for one-line CLI reports).
"""

from __future__ import annotations

import json
import reprlib
from pathlib import Path
from typing import Any

import numpy as np

from dragbench.sample import DragSample, InvalidSampleError

REQUIRED_KEYS = ("prompt", "points", "mask")
# Mask encodings seen in the wild: DragBench writes {0, 1}; some tools write {0, 255}. Nonzero = editable.
MASK_VALUE_SETS = (frozenset({0, 1}), frozenset({0, 255}))
_MAX_VALUES_SHOWN = 8

_repr = reprlib.Repr()
_repr.maxlist = 8
_repr.maxstring = 60


def invalid(path: str | Path, reason: str) -> InvalidSampleError:
    """Build the error for a broken rule: message "<path>: <reason>", attributes `path` and `reason`.

    Args:
        path: the offending file (or sample folder).
        reason: what is wrong, with the value seen.

    Returns:
        The exception (the caller raises it), with ``.path`` (Path) and ``.reason`` ("<file name>: <reason>").
    """
    path = Path(path)
    err = InvalidSampleError(f"{path}: {reason}")
    err.path = path  # type: ignore[attr-defined]
    err.reason = f"{path.name}: {reason}"  # type: ignore[attr-defined]
    return err


def check_meta(meta: Any, path: str | Path) -> dict:
    """Check that `meta` is a dict holding every key of REQUIRED_KEYS; returns it."""
    if not isinstance(meta, dict):
        raise invalid(path, f"expected a dict with keys {list(REQUIRED_KEYS)}, got {type(meta).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise invalid(path, f"missing key {missing[0]!r} (keys seen: {sorted(map(str, meta))})")
    return meta


def check_prompt(prompt: Any, path: str | Path) -> str:
    """Check that the prompt is a string; returns it unchanged (capitalisation and spacing kept)."""
    if not isinstance(prompt, str):
        raise invalid(path, f"prompt must be a str, got {type(prompt).__name__} {_repr.repr(prompt)}")
    return prompt


def parse_points(points: Any, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Split DragBench `points` ([x, y] pairs alternating handle, target) into handles and targets.

    Args:
        points: list (or array) of [x, y] pairs in image pixels, alternating handle, target.
        path: file named in errors.

    Returns:
        (handles, targets): float64 arrays (N, 2), (x, y) pixels, N >= 1.

    Raises:
        InvalidSampleError: not [x, y] pairs, odd count (unpaired handle), non-finite, or zero pairs.
    """
    try:
        arr = np.asarray(points)
    except ValueError:  # ragged nesting, e.g. [[1, 2], [3]]
        raise invalid(path, f"points must be a list of [x, y] pairs, got {_repr.repr(points)}") from None
    if arr.size == 0:
        raise invalid(path, f"zero pairs: points is empty ({_repr.repr(points)}); a sample needs >= 1 pair")
    if arr.dtype.kind not in "iuf":
        raise invalid(path, f"points must be numbers, got {_repr.repr(points)} (dtype {arr.dtype})")
    if arr.ndim == 1:
        parity = "odd" if arr.size % 2 else "even"
        raise invalid(
            path,
            f"{parity} number of point coordinates ({arr.size}) in a flat list {_repr.repr(points)}; "
            "points must be a list of [x, y] pairs",
        )
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise invalid(
            path, f"points must be a list of [x, y] pairs, got shape {arr.shape}: {_repr.repr(points)}"
        )
    if len(arr) % 2:
        raise invalid(
            path,
            f"odd number of points ({len(arr)}): points alternate handle, target, so the last handle "
            f"{arr[-1].tolist()} has no target",
        )
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise invalid(path, f"points must be finite, got {_repr.repr(arr.tolist())}")
    return arr[0::2].copy(), arr[1::2].copy()


def parse_points_json(text: str, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse a Drag100 `points.json`: `{"points": [[x, y], ...]}`, alternating handle, target (GoodDrag).

    Args:
        text: the file's contents.
        path: file named in errors.

    Returns:
        (handles, targets): float64 arrays (N, 2), (x, y) pixels (see :func:`parse_points`).

    Raises:
        InvalidSampleError: not JSON, not an object with key "points", or bad points (parse_points).
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise invalid(path, f'not valid JSON ({exc}); expected {{"points": [[x, y], ...]}}') from None
    if not isinstance(data, dict) or "points" not in data:
        seen = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise invalid(path, f"expected an object with key 'points' (a list of [x, y] pairs), got {seen}")
    return parse_points(data["points"], path)


def first_channel_mask(mask: np.ndarray, image_hw: tuple[int, int], path: str | Path) -> np.ndarray:
    """A Drag100 / GoodDrag mask image as bool: its first channel, > 0 = editable (GoodDrag bench_gooddrag.py).

    Args:
        mask: the decoded mask.png, (H, W) or (H, W, C), any integer values.
        image_hw: (H, W) of the image.
        path: file named in errors.

    Returns:
        bool array (H, W); all False (an empty mask) is valid.

    Raises:
        InvalidSampleError: its size differs from the image's (the message names both sizes).
    """
    mask = mask[..., 0] if mask.ndim == 3 else mask  # (H, W): GoodDrag reads channel 0 only
    if mask.shape != tuple(image_hw):
        raise invalid(
            path,
            f"mask size {mask.shape[1]}x{mask.shape[0]} != image size {image_hw[1]}x{image_hw[0]} (WxH); "
            "resize the mask to the image (nearest) or re-export it",
        )
    return mask > 0


def check_points_inside(
    handles: np.ndarray, targets: np.ndarray, width: int, height: int, path: str | Path
) -> None:
    """Check every handle and target lies in the image: 0 <= x <= W-1, 0 <= y <= H-1 ((x, y) pixels)."""
    for role, pts in (("handle", handles), ("target", targets)):
        for i, (x, y) in enumerate(np.asarray(pts, dtype=np.float64)):
            if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
                shown = [int(v) if float(v).is_integer() else float(v) for v in (x, y)]
                raise invalid(
                    path,
                    f"{role} of pair {i} at [x, y] = {shown} is outside the {width}x{height} image "
                    f"(x in [0, {width - 1}], y in [0, {height - 1}])",
                )


def parse_mask(mask: Any, image_hw: tuple[int, int], path: str | Path) -> np.ndarray:
    """Check the mask's shape and values and return it as bool (True = editable).

    Args:
        mask: array (H, W) with values in {0, 1} or {0, 255}.
        image_hw: (H, W) of the image.
        path: file named in errors.

    Returns:
        bool array (H, W); an all-False (empty) mask is valid.

    Raises:
        InvalidSampleError: not a numeric array, shape != image shape, or values outside both sets.
    """
    if not isinstance(mask, np.ndarray):
        raise invalid(path, f"mask must be a numpy array, got {type(mask).__name__}")
    if mask.dtype.kind not in "biuf":
        raise invalid(path, f"mask must hold numbers, got dtype {mask.dtype}")
    if mask.shape != tuple(image_hw):
        raise invalid(path, f"mask shape {mask.shape} != image shape {tuple(image_hw)} (H, W)")
    values = np.unique(mask)
    seen = set(values.tolist())
    if not any(seen <= allowed for allowed in MASK_VALUE_SETS):
        shown = values[:_MAX_VALUES_SHOWN].tolist() + (["..."] if len(values) > _MAX_VALUES_SHOWN else [])
        raise invalid(path, f"mask values outside {{0,1}} or {{0,255}}: saw {shown}")
    return mask != 0


def validate_sample(sample: DragSample, path: str | Path | None = None) -> None:
    """Check an in-memory sample against the DragSample contract (used before writing it).

    Args:
        sample: the sample.
        path: what to name in errors; defaults to the sample_id.

    Raises:
        InvalidSampleError: bad image/mask array, mismatched or empty points, or a point outside the image.
    """
    where = path if path is not None else sample.sample_id
    image = np.asarray(sample.image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise invalid(where, f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    check_prompt(sample.prompt, where)
    mask = np.asarray(sample.mask)
    if mask.dtype != bool:
        parse_mask(mask, image.shape[:2], where)
    elif mask.shape != image.shape[:2]:
        raise invalid(where, f"mask shape {mask.shape} != image shape {image.shape[:2]} (H, W)")
    handles, targets = np.asarray(sample.handles), np.asarray(sample.targets)
    for role, pts in (("handles", handles), ("targets", targets)):
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise invalid(where, f"{role} must be (N, 2) (x, y), got shape {pts.shape}")
    if len(handles) != len(targets):
        raise invalid(where, f"{len(handles)} handles but {len(targets)} targets")
    if len(handles) == 0:
        raise invalid(where, "zero pairs: a sample needs >= 1 handle/target pair")
    if not (np.isfinite(handles).all() and np.isfinite(targets).all()):
        raise invalid(where, "handles/targets must be finite")
    check_points_inside(handles, targets, image.shape[1], image.shape[0], where)
