"""`python -m dragbench download ROOT`: fetch the official DragBench release zip, verify, unpack, validate.

The release asset is linked from the DragDiffusion repository (Yujun-Shi/DragDiffusion, release v0.1.1; its
drag_bench_evaluation README: "Extract DragBench into the folder drag_bench_data"). Its sha256 and size
could not be read here (no network when this was written), so DRAGBENCH_SHA256 is None: the digest and size
are printed after every download, and `--sha256 HEX` makes a mismatch fatal. The download is resumable:
bytes go to `<root>/.download/DragBench.zip.part` and a rerun asks only for the rest (HTTP Range).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dragbench.bench_io import CATEGORIES, IMAGE_FILE, find_sample_dirs, load_sample
from dragbench.progress import track
from dragbench.sample import InvalidSampleError

log = logging.getLogger(__name__)

DRAGBENCH_URL = "https://github.com/Yujun-Shi/DragDiffusion/releases/download/v0.1.1/DragBench.zip"
DRAGBENCH_SHA256: str | None = None  # unknown here (see the module docstring); pass --sha256 to pin it
DOWNLOAD_DIR = ".download"  # under the bench root; hidden, so the loader never sees it
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0
HTTP_PARTIAL, HTTP_RANGE_NOT_SATISFIABLE = 206, 416
IGNORED_TOP = ("__MACOSX",)  # archive-tool metadata folders, not part of the bench


class DownloadError(RuntimeError):
    """A download, checksum, archive or validation problem; the message is one line naming the fix."""


@dataclass
class Downloaded:
    """What `download_dragbench` produced: the archive, its digest and size, and the valid sample count."""

    archive: Path
    sha256: str
    size: int
    n_samples: int
    n_pairs: int


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _open(url: str, start: int, timeout: float):
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (the user's URL, by design)
    except urllib.error.HTTPError as err:
        if err.code == HTTP_RANGE_NOT_SATISFIABLE and start:
            return None  # the part file already holds every byte
        raise DownloadError(f"cannot download {url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(
            f"cannot download {url}: {reason}. Check the network, or fetch the zip elsewhere and pass "
            f"--url file:///path/to/DragBench.zip"
        ) from None


def _chunks(response) -> Iterator[bytes]:
    yield from iter(lambda: response.read(CHUNK_BYTES), b"")


def fetch(url: str, dest: Path, timeout: float = TIMEOUT_S) -> Path:
    """Download `url` to `dest`, resuming from `dest + ".part"` when it exists (HTTP Range).

    Args:
        url: http(s) or file URL.
        dest: final file; bytes go to `<dest>.part` first and it is renamed when complete.
        timeout: seconds to wait for the server at each read.

    Returns:
        `dest`.

    Raises:
        DownloadError: no connection, an HTTP error, or fewer bytes than the server announced.
    """
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    start = part.stat().st_size if part.exists() else 0
    response = _open(url, start, timeout)
    if response is not None:
        with response:
            resumed = start > 0 and getattr(response, "status", None) == HTTP_PARTIAL
            if start and not resumed:
                log.info("%s: the server ignored the range request; downloading from the start", url)
                start = 0
            length = response.headers.get("Content-Length")
            expected = start + int(length) if length is not None else None
            total = -(-expected // CHUNK_BYTES) if expected else None
            if resumed:
                log.info("resuming %s at byte %d", url, start)
            with part.open("ab" if resumed else "wb") as f:
                for block in track(_chunks(response), "download MiB", unit="MiB", total=total):
                    f.write(block)
        if expected is not None and part.stat().st_size != expected:
            raise DownloadError(
                f"download of {url} stopped at {part.stat().st_size} of {expected} bytes; rerun to resume"
            )
    part.replace(dest)
    return dest


def _safe_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    members = []
    for info in archive.infolist():
        parts = PurePosixPath(info.filename).parts
        if info.filename.startswith("/") or ".." in parts:
            raise DownloadError(f"refusing archive member {info.filename!r} (outside the bench root)")
        if parts and parts[0] not in IGNORED_TOP:
            members.append(info)
    return members


def _bench_top(folder: Path) -> Path:
    """The folder holding the category folders: `folder`, or its single sub-folder (a zip's top folder)."""
    subdirs = [d for d in folder.iterdir() if d.is_dir()]
    if any(d.name in CATEGORIES for d in subdirs) or len(subdirs) != 1:
        return folder
    return subdirs[0]


def unpack(archive_path: Path, root: Path) -> list[str]:
    """Unpack a DragBench zip into `root` in the official layout `<root>/<category>/<name>/...`.

    A single top folder in the zip (e.g. `DragBench/`) is dropped; `__MACOSX/` is skipped.

    Returns:
        The category folders written.

    Raises:
        DownloadError: not a zip, a member outside the root, or a category folder that already exists.
    """
    staging = root / DOWNLOAD_DIR / "unpacked"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive_path) as archive:
            archive.extractall(staging, members=_safe_members(archive))
    except zipfile.BadZipFile as err:
        raise DownloadError(f"{archive_path} is not a zip ({err}); delete it and rerun") from None
    top = _bench_top(staging)
    categories = sorted(d.name for d in top.iterdir() if d.is_dir())
    clash = [name for name in categories if (root / name).exists()]
    if clash:
        raise DownloadError(f"{root} already has {', '.join(clash)}: choose an empty ROOT or delete those")
    for name in categories:
        (top / name).replace(root / name)
    shutil.rmtree(staging)
    return categories


def validate(root: Path) -> tuple[int, int]:
    """Load every sample under `root` (dragbench validate); returns (samples, pairs).

    Raises:
        DownloadError: any invalid sample (the first reasons listed; `python -m dragbench validate ROOT`).
    """
    samples, bad = [], []
    for sample_dir in find_sample_dirs(root):
        try:
            samples.append(load_sample(sample_dir))
        except InvalidSampleError as err:
            bad.append(f"{sample_dir.parent.name}/{sample_dir.name}: {getattr(err, 'reason', err)}")
    if bad:
        raise DownloadError(
            f"{len(bad)} of {len(bad) + len(samples)} samples invalid (first: {bad[0]}); "
            f"see `python -m dragbench validate {root}`"
        )
    return len(samples), sum(s.n_pairs for s in samples)


def download_dragbench(
    root: str | Path,
    url: str = DRAGBENCH_URL,
    sha256: str | None = DRAGBENCH_SHA256,
    timeout: float = TIMEOUT_S,
) -> Downloaded:
    """Download (resumably), verify, unpack and validate DragBench into `root`.

    Args:
        root: the bench root to fill (`<root>/<category>/<name>/{original_image.png, meta_data.pkl}`).
        url: where the zip is (default: the official release asset).
        sha256: expected hex digest of the zip; None = not verified (the digest is returned to pin it).
        timeout: seconds to wait for the server at each read.

    Returns:
        The archive path, its sha256 and size, and the number of samples and pairs.

    Raises:
        DownloadError: no network, checksum mismatch (the bad file is deleted), broken zip, invalid samples.
    """
    root = Path(root)
    if root.is_dir() and any((d / IMAGE_FILE).exists() for d in root.glob("*/*")):
        raise DownloadError(
            f"{root} already holds samples; check it with `python -m dragbench validate {root}`"
        )
    archive = root / DOWNLOAD_DIR / PurePosixPath(url).name
    if not archive.exists():
        fetch(url, archive, timeout)
    digest = _sha256(archive)
    if sha256 is not None and digest != sha256.lower():
        archive.unlink()
        raise DownloadError(
            f"checksum mismatch for {url}: sha256 {digest}, expected {sha256.lower()}; the file was deleted, "
            f"rerun to download it again"
        )
    unpack(archive, root)
    n_samples, n_pairs = validate(root)
    return Downloaded(archive, digest, archive.stat().st_size, n_samples, n_pairs)
