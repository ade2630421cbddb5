"""Drag100, GoodDrag's benchmark (protocol §11): `<root>/<name>/{original.jpg, mask.png, points.json}`.

Loaded into the same `DragSample` as DragBench: prompt "" (GoodDrag's bench script runs with an empty prompt),
mask = first channel of mask.png > 0, points = `points.json["points"]`, [x, y] pixels alternating handle,
target. Drag100 has no category folders: every sample has category "drag100" and sample_id
"drag100/<folder name>" (a folder prefix such as `cat_` in `cat_2` names the object, not one of the paper's
categories, so it is not exposed as one).
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from dragbench.bench_io import resize_sample
from dragbench.sample import DragSample
from dragbench.subset import check_categories, check_limit
from dragbench.validation import (
    check_points_inside,
    first_channel_mask,
    invalid,
    parse_points_json,
    validate_sample,
)

logger = logging.getLogger(__name__)

CATEGORY = "drag100"  # the one category of every Drag100 sample (sample_id "drag100/<folder>")
IMAGE_FILE = "original.jpg"
MASK_FILE = "mask.png"
POINTS_FILE = "points.json"
SAMPLE_FILES = (IMAGE_FILE, MASK_FILE, POINTS_FILE)
JPEG_QUALITY = 100  # save_drag100_sample: JPEG is lossy; quality 100 + no chroma subsampling keeps it close
MASK_ON = 255  # GoodDrag's mask.png files are mode L with values {0, 255}


def _open_image(path: Path) -> Image.Image:
    """Open and fully decode an image file (errors name the file)."""
    if not path.is_file():
        raise invalid(path, f"missing file (a Drag100 sample folder holds {', '.join(SAMPLE_FILES)})")
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise invalid(path, f"unreadable or corrupt image ({type(exc).__name__}: {exc})") from exc


def is_drag100_sample(path: str | Path) -> bool:
    """True when `path` is a folder holding a Drag100 `points.json` (the file DragBench never has)."""
    return (Path(path) / POINTS_FILE).is_file()


def is_drag100_root(root: str | Path) -> bool:
    """True when some folder directly under `root` (or root itself) holds a points.json: the Drag100 layout,
    which DragBench (`<root>/<category>/<name>/meta_data.pkl`) never matches."""
    root = Path(root)
    return root.is_dir() and (is_drag100_sample(root) or any(is_drag100_sample(d) for d in root.iterdir()))


def load_drag100_sample(sample_dir: str | Path) -> DragSample:
    """Load and validate one Drag100 sample folder `<root>/<name>/`.

    Args:
        sample_dir: the folder holding original.jpg, mask.png and points.json.

    Returns:
        The sample: sample_id "drag100/<name>", category "drag100", prompt "", image RGB uint8, mask bool
        (first channel of mask.png > 0), handles/targets float (N, 2) (x, y) pixels. `meta` records the
        format, the source folder, the size on disk and the PIL modes of image and mask.

    Raises:
        InvalidSampleError: a missing or corrupt file, bad JSON, bad points, a point outside the image or a
            mask of another size; the message names the file and the fix.
    """
    sample_dir = Path(sample_dir)
    if not sample_dir.is_dir():
        raise invalid(sample_dir, "not a sample folder (expected <root>/<name>/ with " + ", ".join(SAMPLE_FILES))
    image_file, mask_file = _open_image(sample_dir / IMAGE_FILE), _open_image(sample_dir / MASK_FILE)
    image = np.asarray(image_file.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
    height, width = image.shape[:2]
    mask = first_channel_mask(np.asarray(mask_file), (height, width), sample_dir / MASK_FILE)
    image_mode, mask_mode = image_file.mode, mask_file.mode
    points_path = sample_dir / POINTS_FILE
    if not points_path.is_file():
        raise invalid(points_path, 'missing file (expected {"points": [[x, y], ...]}, handle then target)')
    handles, targets = parse_points_json(points_path.read_text(encoding="utf-8"), points_path)
    check_points_inside(handles, targets, width, height, points_path)
    if image_mode != "RGB":
        logger.info("%s: converted %s image to RGB", sample_dir / IMAGE_FILE, image_mode)
    meta = {
        "format": "drag100",
        "source_dir": str(sample_dir),
        "size_wh_on_disk": [width, height],
        "image_mode": image_mode,
        "mask_mode": mask_mode,
    }
    return DragSample(
        sample_id=f"{CATEGORY}/{sample_dir.name}",
        category=CATEGORY,
        prompt="",
        image=image,
        mask=mask,
        handles=handles,
        targets=targets,
        meta=meta,
    )


def find_drag100_dirs(root: str | Path) -> list[Path]:
    """The sample folders of a Drag100 root, sorted by name (hidden folders such as .ipynb_checkpoints and
    __MACOSX are left out; a folder without points.json is listed, so validation reports it).

    Raises:
        FileNotFoundError: root missing or without sample folders.
        ValueError: root is itself a sample folder, or holds one folder that is the real root.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Drag100 root {root} does not exist or is not a folder")
    if is_drag100_sample(root):
        raise ValueError(f"{root} is a single Drag100 sample folder; pass its parent (dataset.root=<root>)")
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name != "__MACOSX")
    if not any(is_drag100_sample(d) for d in dirs):
        nested = [d for d in dirs if any(is_drag100_sample(c) for c in d.iterdir() if c.is_dir())]
        if len(nested) == 1:
            raise ValueError(f"{root} holds no samples but {nested[0]} does; use dataset.root={nested[0]}")
        raise FileNotFoundError(f"no Drag100 samples under {root} (expected <root>/<name>/{POINTS_FILE})")
    return dirs


def load_drag100(
    root: str | Path,
    categories: Sequence[str] | str | None = None,
    limit: int | None = None,
    resize: int | None = None,
) -> list[DragSample]:
    """Load a Drag100 folder (`dataset=drag100 dataset.root=...`), with DragBench's quick-run knobs.

    Args:
        root: folder holding `<name>/{original.jpg, mask.png, points.json}`.
        categories: only "drag100" exists (any other name raises ValueError, listing it).
        limit: keep the first `limit` samples in name order (None = all).
        resize: scale every sample to this width (dragbench.bench_io.resize: LANCZOS image, nearest mask,
            rounded points); None keeps the native size.

    Returns:
        Samples sorted by folder name.

    Raises:
        FileNotFoundError, ValueError: see :func:`find_drag100_dirs`; ValueError for limit < 1 or an unknown
            category.
        InvalidSampleError: the first invalid sample (`python -m dragbench validate ROOT` lists all).
    """
    check_limit(limit)
    check_categories(categories, (CATEGORY,), f"Drag100 ({root})")
    dirs = find_drag100_dirs(root)
    if limit is not None:
        dirs = dirs[:limit]
    samples = [load_drag100_sample(d) for d in dirs]
    if resize is not None:
        samples = [resize_sample(s, resize) for s in samples]
    logger.info(
        "loaded %d Drag100 samples (%d pairs) from %s%s",
        len(samples),
        sum(s.n_pairs for s in samples),
        root,
        f", resized to width {resize}" if resize is not None else "",
    )
    return samples


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _encoded(array: np.ndarray, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **options)
    return buf.getvalue()


def save_drag100_sample(sample: DragSample, sample_dir: str | Path) -> Path:
    """Write a sample in the Drag100 layout (e.g. a DragBench sample for GoodDrag's own scripts).

    original.jpg is JPEG (quality 100, no chroma subsampling: lossy, a few grey levels off), mask.png is
    mode L {0, 255}, points.json holds `{"points": [[x, y], ...]}` alternating handle, target, as integers
    (points are rounded with Python's round; the prompt is not stored: Drag100 has none).

    Args:
        sample: the sample (validated first).
        sample_dir: the folder to write (created if needed); it loads back as "drag100/<folder name>".

    Returns:
        The sample folder.

    Raises:
        InvalidSampleError: the sample breaks the DragSample contract (nothing is written).
    """
    validate_sample(sample)
    sample_dir = Path(sample_dir)
    sample_dir.mkdir(parents=True, exist_ok=True)
    pts = np.stack([sample.handles, sample.targets], axis=1).reshape(-1, 2)  # (2N, 2) handle, target, ...
    points = [[round(float(x)), round(float(y))] for x, y in pts]
    mask = np.where(np.asarray(sample.mask, dtype=bool), MASK_ON, 0).astype(np.uint8)  # (H, W)
    image = np.ascontiguousarray(sample.image, dtype=np.uint8)
    _atomic_write(sample_dir / IMAGE_FILE, _encoded(image, "JPEG", quality=JPEG_QUALITY, subsampling=0))
    _atomic_write(sample_dir / MASK_FILE, _encoded(mask, "PNG"))
    _atomic_write(sample_dir / POINTS_FILE, json.dumps({"points": points}).encode())
    return sample_dir
