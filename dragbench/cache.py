"""A content-addressed on-disk cache for tensors (LoRA snapshots, inverted latents, DIFT features).

Key = sha256 of the canonical JSON of (namespace, inputs, CODE_VERSION). Each entry is one file:
a 64-hex-digit sha256 of the payload, a newline, then the safetensors payload. Writes go to a temporary
file renamed into place (atomic on POSIX, so concurrent writers of the same key are safe: last rename wins,
both wrote identical content). Reads verify the hash; a corrupt entry is logged, deleted and recomputed.
`get_or_compute` holds a per-key inter-process lock (`fcntl.flock` on `<key>.lock`) while computing, so
concurrent jobs (joblib / submitit launchers, a shared filesystem) wait for the first to fill an entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from platformdirs import user_cache_dir
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

log = logging.getLogger(__name__)

# Bump when any cached computation changes, so stale entries are never returned.
CODE_VERSION = "1"
ENV_VAR = "DRAGBENCH_CACHE_DIR"


def default_cache_root() -> Path:
    """$DRAGBENCH_CACHE_DIR, else the user cache dir (e.g. ~/.cache/dragbench)."""
    return Path(os.environ.get(ENV_VAR) or user_cache_dir("dragbench"))


def _canonical(value):
    """Make inputs JSON-serialisable in one canonical way (arrays and tensors by content hash)."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().contiguous().numpy()
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        digest = hashlib.sha256(data.tobytes()).hexdigest()
        return {"sha256": digest, "shape": list(data.shape), "dtype": str(data.dtype)}
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cache inputs must be JSON-like, arrays or tensors; got {type(value).__name__}")


# Locks held by this process: path -> (thread lock, open lock file or None, depth). The thread lock makes
# the per-key lock reentrant within a thread (flock on a second descriptor of the same file would deadlock)
# and serialises threads of one process, which flock alone does not.
_HELD: dict[str, list] = {}
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock on `path` across processes (fcntl.flock) and threads; reentrant per thread.

    The lock file is created if needed and never deleted (deleting it would race with waiters). flock is
    released by the OS when its holder dies, so a killed job never leaves a stale lock. On NFS, Linux emulates
    flock with POSIX byte-range locks, which NFS supports.
    """
    key = str(path)
    with _HELD_GUARD:
        entry = _HELD.setdefault(key, [threading.RLock(), None, 0])
    entry[0].acquire()
    try:
        if entry[2] == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("cache: waiting for another process to finish %s", path.stem)
                fcntl.flock(fd, fcntl.LOCK_EX)
            entry[1] = fd
        entry[2] += 1
        try:
            yield
        finally:
            entry[2] -= 1
            if entry[2] == 0:
                fd, entry[1] = entry[1], None
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
    finally:
        entry[0].release()


def cache_key(namespace: str, inputs: dict) -> str:
    """sha256 hex digest of the canonical JSON of (namespace, inputs, code version)."""
    blob = json.dumps(
        {"namespace": namespace, "inputs": _canonical(inputs), "code_version": CODE_VERSION},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class Cache:
    """Content-addressed tensor cache; wrap a computation with `get_or_compute`.

    Args:
        root: folder for entries; None -> `default_cache_root()`.
        enabled: False turns every call into a plain computation (nothing read or written).

    Examples:
        >>> cache = Cache("/tmp/c")
        >>> out = cache.get_or_compute("inversion", {"t": 35}, lambda: {"z": torch.zeros(2)})
    """

    def __init__(self, root: str | Path | None = None, enabled: bool = True) -> None:
        self.root = Path(root) if root is not None else default_cache_root()
        self.enabled = enabled
        self.stats: Counter[str] = Counter()

    def path(self, namespace: str, inputs: dict) -> Path:
        key = cache_key(namespace, inputs)
        return self.root / namespace / key[:2] / f"{key}.st"

    def lock(self, namespace: str, inputs: dict) -> contextlib.AbstractContextManager:
        """Per-key inter-process lock (`<key>.lock` beside the entry); a no-op when disabled.

        `get_or_compute` takes it itself; callers may take it around a larger unit of work (e.g. a LoRA
        training run that produces several snapshots) so that concurrent jobs wait instead of duplicating it.
        """
        if not self.enabled:
            return contextlib.nullcontext()
        return file_lock(self.path(namespace, inputs).with_suffix(".lock"))

    def get(self, namespace: str, inputs: dict) -> dict[str, torch.Tensor] | None:
        """The stored tensors, or None when absent or corrupt (a corrupt entry is logged and deleted)."""
        if not self.enabled:
            return None
        path = self.path(namespace, inputs)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        digest, _, payload = blob.partition(b"\n")
        if hashlib.sha256(payload).hexdigest().encode() != digest:
            log.warning("cache: corrupt entry %s (hash mismatch): dropped, recomputing", path)
            path.unlink(missing_ok=True)
            self.stats[f"{namespace}/corrupt"] += 1
            return None
        return st_load(payload)

    def put(self, namespace: str, inputs: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Store tensors atomically (temp file in the same folder, then rename)."""
        if not self.enabled:
            return
        path = self.path(namespace, inputs)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        blob = hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".st")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_or_compute(
        self,
        namespace: str,
        inputs: dict,
        compute: Callable[[], dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """Return the cached tensors for (namespace, inputs), computing and storing them on a miss.

        Only cache deterministic computations: the inputs must determine the result. On a miss the key's
        lock is held while computing, so a concurrent process asking for the same key waits and then reads
        the stored entry instead of computing it again.
        """
        found = self.get(namespace, inputs)
        if found is None and self.enabled:
            with self.lock(namespace, inputs):
                found = self.get(namespace, inputs)  # filled while we waited?
                if found is None:
                    return self._compute_and_put(namespace, inputs, compute)
        if found is not None:
            self.stats[f"{namespace}/hit"] += 1
            log.debug("cache hit %s", namespace)
            return found
        return self._compute_and_put(namespace, inputs, compute)

    def _compute_and_put(
        self, namespace: str, inputs: dict, compute: Callable[[], dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        self.stats[f"{namespace}/miss"] += 1
        result = compute()
        self.put(namespace, inputs, result)
        return result
