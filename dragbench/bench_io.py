"""Read, write and resize DragBench samples in the official on-disk layout (protocol §1).

`<root>/<category>/<name>/{original_image.png, meta_data.pkl, user_drag.png}`; `meta_data.pkl` holds
`prompt`, `points` ([x, y] ints alternating handle, target) and `mask` (uint8 (H, W), 1 = editable).
Resizing follows the official-ref inputs README ("Inputs"): LANCZOS image, nearest mask, rounded points.
"""

from __future__ import annotations

import difflib
import io
import logging
import os
import pickle
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from dragbench.pickle_safe import safe_load
from dragbench.sample import DragSample
from dragbench.validation import (
    check_meta,
    check_points_inside,
    check_prompt,
    invalid,
    parse_mask,
    parse_points,
    validate_sample,
)
from dragbench.visualize import draw_drag

logger = logging.getLogger(__name__)

CATEGORIES = (  # protocol §1: the 10 DragBench category folders
    "art_work",
    "land_scape",
    "building_city_view",
    "building_countryside_view",
    "animals",
    "human_head",
    "human_upper_body",
    "human_full_body",
    "interior_design",
    "other_objects",
)
IMAGE_FILE = "original_image.png"
META_FILE = "meta_data.pkl"
DRAG_FILE = "user_drag.png"
PICKLE_PROTOCOL = 4  # protocol of the published DragBench pickles; fixed so writes are byte-stable
RESIZE_HEIGHT_MULTIPLE = 8  # official-ref inputs README: H' = round(H * W' / W / 8) * 8 (VAE factor)


def _read_image(path: Path) -> tuple[np.ndarray, str]:
    """Decode an image file to uint8 RGB (H, W, 3); returns it and the file's PIL mode."""
    if not path.is_file():
        raise invalid(path, "missing file")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise invalid(path, f"unreadable or corrupt image ({type(exc).__name__}: {exc})") from exc
    return rgb, mode


def load_sample(sample_dir: str | Path) -> DragSample:
    """Load and validate one sample folder `<root>/<category>/<name>/`.

    Args:
        sample_dir: the sample folder; its parent folder's name is the category.

    Returns:
        The sample (sample_id "<category>/<name>", image RGB uint8, mask bool, handles/targets float (N, 2)
        (x, y) pixels). `meta` records the source folder, the size on disk and any conversion applied
        (`image_mode` when the PNG was not RGB, `mask_encoding` "0/255" when the mask used 255).

    Raises:
        InvalidSampleError: missing/corrupt file, refused pickle global, or a broken rule (see validation).
    """
    sample_dir = Path(sample_dir)
    if not sample_dir.is_dir():
        raise invalid(sample_dir, "not a sample folder (expected <root>/<category>/<name>/)")
    image_path, meta_path = sample_dir / IMAGE_FILE, sample_dir / META_FILE
    for path in (image_path, meta_path):
        if not path.is_file():
            raise invalid(path, "missing file")
    image, mode = _read_image(image_path)
    height, width = image.shape[:2]
    meta = check_meta(safe_load(meta_path), meta_path)
    prompt = check_prompt(meta["prompt"], meta_path)
    handles, targets = parse_points(meta["points"], meta_path)
    check_points_inside(handles, targets, width, height, meta_path)
    mask = parse_mask(meta["mask"], (height, width), meta_path)
    extras: dict = {"source_dir": str(sample_dir), "size_wh_on_disk": [width, height]}
    if mode != "RGB":
        extras["image_mode"] = mode
        logger.info("%s: converted %s image to RGB", image_path, mode)
    if np.asarray(meta["mask"]).max(initial=0) > 1:
        extras["mask_encoding"] = "0/255"
    category = sample_dir.parent.name
    return DragSample(
        sample_id=f"{category}/{sample_dir.name}",
        category=category,
        prompt=prompt,
        image=image,
        mask=mask,
        handles=handles,
        targets=targets,
        meta=extras,
    )


def _closest(name: str, choices: Sequence[str]) -> str:
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.0)
    return f"; did you mean {match[0]!r}?" if match else ""


def find_sample_dirs(root: str | Path, categories: Sequence[str] | str | None = None) -> list[Path]:
    """List the sample folders of a bench root, sorted by category then name (plain string order).

    Args:
        root: bench root holding `<category>/<name>/` folders.
        categories: restrict to these category folders (None = all present).

    Returns:
        Sample folder paths (not validated).

    Raises:
        FileNotFoundError: root missing, or no sample folders in it.
        ValueError: root is itself a sample folder, or an unknown category (lists the valid ones and the
            closest match).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"bench root {root} does not exist or is not a folder")
    if (root / IMAGE_FILE).exists() or (root / META_FILE).exists():
        raise ValueError(f"{root} is a single sample folder; pass its bench root (<root>/<category>/<name>/)")
    present = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    chosen = present
    if categories is not None:
        categories = [categories] if isinstance(categories, str) else list(categories)
        for name in categories:
            if name not in present:
                raise ValueError(
                    f"unknown category {name!r} under {root}{_closest(name, present)} "
                    f"Valid categories: {', '.join(present)}"
                )
        chosen = sorted(set(categories))
    dirs = [
        d
        for category in chosen
        for d in sorted((root / category).iterdir())
        if d.is_dir() and not d.name.startswith(".")
    ]
    if not dirs:
        raise FileNotFoundError(f"no samples under {root} (expected <root>/<category>/<name>/{IMAGE_FILE})")
    return dirs


def load_bench(
    root: str | Path,
    categories: Sequence[str] | str | None = None,
    limit: int | None = None,
    resize: int | None = None,
) -> list[DragSample]:
    """Load a DragBench-layout folder.

    Args:
        root: bench root holding `<category>/<name>/` folders.
        categories: only these categories (None = all present); unknown names raise ValueError.
        limit: keep the first `limit` samples of the sorted order (None = all).
        resize: scale every sample to this width (see :func:`resize`); None keeps the native size.

    Returns:
        Samples sorted by category then name.

    Raises:
        FileNotFoundError, ValueError: see :func:`find_sample_dirs`; ValueError for limit < 1.
        InvalidSampleError: the first invalid sample (use `python -m dragbench validate ROOT` to list all).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    dirs = find_sample_dirs(root, categories)
    if limit is not None:
        dirs = dirs[:limit]
    samples = [load_sample(d) for d in dirs]
    if resize is not None:
        samples = [resize_sample(s, resize) for s in samples]
    logger.info(
        "loaded %d samples (%d pairs) from %s%s",
        len(samples),
        sum(s.n_pairs for s in samples),
        root,
        f", resized to width {resize}" if resize is not None else "",
    )
    return samples


def _scale_points(points: np.ndarray, sx_num: int, sx_den: int, sy_num: int, sy_den: int) -> np.ndarray:
    """[round(x*W'/W), round(y*H'/H)] with Python's round (half to even), as float (N, 2)."""
    return np.array(
        [[round(float(x) * sx_num / sx_den), round(float(y) * sy_num / sy_den)] for x, y in points],
        dtype=np.float64,
    ).reshape(-1, 2)


def resize(sample: DragSample, width: int) -> DragSample:
    """Scale a sample to `width`, keeping the aspect ratio with the height rounded to a multiple of 8.

    Follows the official-ref inputs README: H' = round(H * W' / W / 8) * 8; image PIL LANCZOS; mask PIL
    nearest; points [round(x * W'/W), round(y * H'/H)] (Python round, half to even), clipped into the image.

    Args:
        sample: the sample to scale.
        width: new width W' in pixels.

    Returns:
        A new sample; `meta["resize"]` records from/to sizes, methods and how many points were clipped.

    Raises:
        ValueError: width < 1 or a resulting height of 0.
    """
    if width < 1:
        raise ValueError(f"resize width must be >= 1, got {width}")
    w0, h0 = sample.width, sample.height
    w1 = int(width)
    h1 = round(h0 * w1 / w0 / RESIZE_HEIGHT_MULTIPLE) * RESIZE_HEIGHT_MULTIPLE
    if h1 < RESIZE_HEIGHT_MULTIPLE:
        raise ValueError(f"resize to width {w1} gives height {h1} for a {w0}x{h0} image; use a larger width")
    image = np.asarray(Image.fromarray(sample.image).resize((w1, h1), Image.LANCZOS), dtype=np.uint8)
    mask_u8 = Image.fromarray(np.asarray(sample.mask, dtype=np.uint8))
    mask = np.asarray(mask_u8.resize((w1, h1), Image.NEAREST)) != 0
    handles = _scale_points(sample.handles, w1, w0, h1, h0)
    targets = _scale_points(sample.targets, w1, w0, h1, h0)
    limit = np.array([w1 - 1, h1 - 1], dtype=np.float64)
    clipped = int((handles > limit).any(axis=1).sum() + (targets > limit).any(axis=1).sum())
    handles, targets = np.minimum(handles, limit), np.minimum(targets, limit)
    if clipped:
        logger.warning(
            "%s: %d point(s) clipped into the image after resizing to %dx%d",
            sample.sample_id,
            clipped,
            w1,
            h1,
        )
    meta = dict(sample.meta)
    meta["resize"] = {
        "from_wh": [w0, h0],
        "to_wh": [w1, h1],
        "image": "PIL LANCZOS",
        "mask": "PIL NEAREST",
        "points": "[round(x*W'/W), round(y*H'/H)]",
        "clipped_points": clipped,
    }
    return replace(sample, image=image, mask=mask, handles=handles, targets=targets, meta=meta)


resize_sample = resize  # alias: `load_bench` has a parameter called `resize`


def _points_on_disk(sample: DragSample) -> list[list[int]]:
    """[x, y] int pairs alternating handle, target; non-integral points are rounded (logged)."""
    pts = np.stack([sample.handles, sample.targets], axis=1).reshape(-1, 2).astype(np.float64)  # (2N, 2)
    rounded = np.array([[round(float(v)) for v in p] for p in pts], dtype=np.float64).reshape(-1, 2)
    if not np.array_equal(rounded, pts):
        logger.warning(
            "%s: %d non-integral point(s) rounded to whole pixels on save",
            sample.sample_id,
            int((rounded != pts).any(axis=1).sum()),
        )
    return [[int(x), int(y)] for x, y in rounded]


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def save_sample(sample: DragSample, sample_dir: str | Path) -> Path:
    """Write a sample in the official layout: original_image.png, meta_data.pkl, user_drag.png.

    Points are written as [x, y] ints (non-integral ones are rounded with Python's round and a warning);
    the mask as uint8 {0, 1}. Same sample → byte-identical files. Files are replaced atomically.

    Args:
        sample: the sample (validated first).
        sample_dir: target folder, normally `<root>/<category>/<name>` (created if needed); it loads back
            with sample_id "<parent name>/<folder name>".

    Returns:
        The sample folder.

    Raises:
        InvalidSampleError: the sample breaks the DragSample contract (nothing is written).
    """
    sample_dir = Path(sample_dir)
    validate_sample(sample)
    if f"{sample_dir.parent.name}/{sample_dir.name}" != sample.sample_id:
        logger.warning(
            "saving %s to %s: it will load back as %s/%s",
            sample.sample_id,
            sample_dir,
            sample_dir.parent.name,
            sample_dir.name,
        )
    mask_u8 = np.ascontiguousarray(np.asarray(sample.mask) != 0, dtype=np.uint8)
    meta = {"prompt": sample.prompt, "points": _points_on_disk(sample), "mask": mask_u8}
    sample_dir.mkdir(parents=True, exist_ok=True)
    image = np.ascontiguousarray(sample.image, dtype=np.uint8)
    _atomic_write(sample_dir / IMAGE_FILE, _png_bytes(image))
    _atomic_write(sample_dir / META_FILE, pickle.dumps(meta, protocol=PICKLE_PROTOCOL))
    drag = draw_drag(image, mask_u8.astype(bool), sample.handles, sample.targets)
    _atomic_write(sample_dir / DRAG_FILE, _png_bytes(drag))
    return sample_dir
