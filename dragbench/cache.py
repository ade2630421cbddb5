"""A content-addressed on-disk cache for tensors (LoRA snapshots, inverted latents, DIFT features).

Key = sha256 of the canonical JSON of (namespace, inputs, code version); the code version is derived from what
produced the entry: the source of the producing modules (and of every harness module they import) plus the
versions of torch / diffusers / peft / transformers (`code_version`). Editing the LoRA trainer or
upgrading diffusers therefore misses the old entries instead of serving them. Each entry is one file:
a 64-hex-digit sha256 of the payload, a newline, then the safetensors payload. Writes go to a temporary
file renamed into place (atomic on POSIX, so concurrent writers of the same key are safe: last rename wins,
both wrote identical content). Reads verify the hash; a corrupt entry is logged, deleted and recomputed.
`get_or_compute` holds a per-key inter-process lock (`fcntl.flock` on `<key>.lock`) while computing, so
concurrent jobs (joblib / submitit launchers, a shared filesystem) wait for the first to fill an entry.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from platformdirs import user_cache_dir
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

log = logging.getLogger(__name__)

ENV_VAR = "DRAGBENCH_CACHE_DIR"
# Libraries whose kernels, defaults and schedulers can change a cached tensor: their versions enter every key.
LIBRARIES = ("torch", "diffusers", "peft", "transformers")
# The harness's own packages: imports into them are followed when hashing a producer's source.
FIRST_PARTY = ("dragbench", "methods", "eval")


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


@functools.cache
def library_versions() -> dict[str, str]:
    """{name: version} of LIBRARIES ("absent" when not installed)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _first_party_file(name: str) -> Path | None:
    """The source file of harness module `name`, found on disk without importing anything; None if absent."""
    top, *rest = name.split(".")
    spec = importlib.util.find_spec(top)  # locating a top-level package does not import it
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(next(iter(spec.submodule_search_locations))).joinpath(*rest)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_file(name: str) -> Path:
    file = _first_party_file(name) if _is_first_party(name) else None
    if file is None:
        module = sys.modules.get(name)
        spec = importlib.util.find_spec(name) if module is None else None
        file = getattr(module, "__file__", None) or (spec.origin if spec is not None else None)
    if file is None or not str(file).endswith(".py"):
        raise ValueError(f"cache producer {name!r} has no Python source file; pass producers=(<module>,)")
    return Path(file)


def source_digest(name: str) -> str:
    """sha256 of module `name`'s source file (re-read when the file's mtime or size changes)."""
    path = _module_file(name)
    stat = path.stat()
    return _file_digest(str(path), stat.st_mtime_ns, stat.st_size)


@functools.cache
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _is_first_party(name: str) -> bool:
    return name.split(".", 1)[0] in FIRST_PARTY


def _is_module(name: str) -> bool:
    return _first_party_file(name) is not None


def _imported_modules(name: str) -> set[str]:
    """First-party modules `name` imports (anywhere in the file, lazy imports included)."""
    path = _module_file(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            found.add(base)
            if _is_first_party(base):  # `from pkg import module` names a module too
                found.update(f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}"))
    return {m for m in found if _is_first_party(m) and _is_module(m)}


@functools.cache
def producer_modules(name: str) -> tuple[str, ...]:
    """`name` and every harness module it imports, transitively (sorted)."""
    seen, todo = {name}, [name]
    while todo:
        for module in _imported_modules(todo.pop()) - seen:
            seen.add(module)
            todo.append(module)
    return tuple(sorted(seen))


def code_version(producers: Sequence[str]) -> str:
    """The code part of a cache key: sha256 of the sources of `producers` (modules, with every harness
    module they import) and of the LIBRARIES' versions. Any edit or upgrade gives a new version.

    Args:
        producers: dotted names of the modules whose code computes the cached tensors.

    Raises:
        ValueError: no producer, or a producer without a Python source file.
    """
    if not producers:
        raise ValueError("a cache entry needs its producing module(s): pass producers=(__name__,)")
    modules = sorted({m for p in producers for m in producer_modules(p)})
    blob = json.dumps(
        {"sources": {m: source_digest(m) for m in modules}, "libraries": library_versions()}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_key(namespace: str, inputs: dict, producers: Sequence[str]) -> str:
    """sha256 hex digest of the canonical JSON of (namespace, inputs, code_version(producers))."""
    blob = json.dumps(
        {"namespace": namespace, "inputs": _canonical(inputs), "code_version": code_version(producers)},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class Cache:
    """Content-addressed tensor cache; wrap a computation with `get_or_compute`.

    Args:
        root: folder for entries; None -> `default_cache_root()`.
        enabled: False turns every call into a plain computation (nothing read or written).

    Every method takes `producers`: the modules whose code computes the entry (usually `(__name__,)` of the
    caller); their source and the library versions enter the key (`code_version`). `get_or_compute`
    defaults to the module of `compute`.

    Examples:
        >>> cache = Cache("/tmp/c")
        >>> out = cache.get_or_compute("inversion", {"t": 35}, lambda: {"z": torch.zeros(2)})
    """

    def __init__(self, root: str | Path | None = None, enabled: bool = True) -> None:
        self.root = Path(root) if root is not None else default_cache_root()
        self.enabled = enabled
        self.stats: Counter[str] = Counter()

    def path(self, namespace: str, inputs: dict, *, producers: Sequence[str]) -> Path:
        """<root>/<namespace>/<key[:2]>/<key>.st"""
        key = cache_key(namespace, inputs, producers)
        return self.root / namespace / key[:2] / f"{key}.st"

    def lock(
        self, namespace: str, inputs: dict, *, producers: Sequence[str]
    ) -> contextlib.AbstractContextManager:
        """Per-key inter-process lock (`<key>.lock` beside the entry); a no-op when disabled.

        `get_or_compute` takes it itself; callers may take it around a larger unit of work (e.g. a LoRA
        training run that produces several snapshots) so that concurrent jobs wait instead of duplicating it.
        """
        if not self.enabled:
            return contextlib.nullcontext()
        return file_lock(self.path(namespace, inputs, producers=producers).with_suffix(".lock"))

    def get(
        self, namespace: str, inputs: dict, *, producers: Sequence[str]
    ) -> dict[str, torch.Tensor] | None:
        """The stored tensors, or None when absent or corrupt (a corrupt entry is logged and deleted)."""
        if not self.enabled:
            return None
        path = self.path(namespace, inputs, producers=producers)
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

    def put(
        self, namespace: str, inputs: dict, tensors: dict[str, torch.Tensor], *, producers: Sequence[str]
    ) -> None:
        """Store tensors atomically (temp file in the same folder, then rename)."""
        if not self.enabled:
            return
        path = self.path(namespace, inputs, producers=producers)
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
        producers: Sequence[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Return the cached tensors for (namespace, inputs), computing and storing them on a miss.

        Only cache deterministic computations: the inputs must determine the result. On a miss the key's
        lock is held while computing, so a concurrent process asking for the same key waits and then reads
        the stored entry instead of computing it again.

        Args:
            namespace: kind of entry ("lora", "inversion", "dift", ...).
            inputs: everything the result depends on besides code (JSON-like, arrays, tensors).
            compute: () -> tensors, called on a miss.
            producers: modules whose code computes the entry; None = the module defining `compute`.
        """
        producers = tuple(producers) if producers is not None else (compute.__module__,)
        found = self.get(namespace, inputs, producers=producers)
        if found is None and self.enabled:
            with self.lock(namespace, inputs, producers=producers):
                found = self.get(namespace, inputs, producers=producers)  # filled while we waited?
                if found is None:
                    return self._compute_and_put(namespace, inputs, compute, producers)
        if found is not None:
            self.stats[f"{namespace}/hit"] += 1
            log.debug("cache hit %s", namespace)
            return found
        return self._compute_and_put(namespace, inputs, compute, producers)

    def _compute_and_put(
        self,
        namespace: str,
        inputs: dict,
        compute: Callable[[], dict[str, torch.Tensor]],
        producers: Sequence[str],
    ) -> dict[str, torch.Tensor]:
        self.stats[f"{namespace}/miss"] += 1
        result = compute()
        self.put(namespace, inputs, result, producers=producers)
        return result
