"""Restricted unpickler for DragBench `meta_data.pkl` files (protocol §1).

A DragBench pickle needs only numpy's array/scalar reconstruction and plain builtin containers; every other
global (``os.system``, ``subprocess.Popen``, ``builtins.eval`` …) is refused before it can be called.
"""

from __future__ import annotations

import importlib
import io
import logging
import pickle
from pathlib import Path
from typing import Any

from dragbench.validation import invalid

logger = logging.getLogger(__name__)

# numpy spells its private core module `numpy.core` (numpy 1.x pickles, the published DragBench files) or
# `numpy._core` (numpy >= 2). Both spellings map to the same function of the installed numpy.
_NUMPY_GLOBALS: dict[tuple[str, str], tuple[str, str]] = {
    (f"numpy.{core}.{module}", name): (module, name)
    for core in ("core", "_core")
    for module, name in (
        ("multiarray", "_reconstruct"),  # ndarray.__reduce__ (protocols 0-4)
        ("multiarray", "scalar"),  # numpy scalars, e.g. np.int64 points
        ("numeric", "_frombuffer"),  # ndarray.__reduce_ex__ with protocol 5
    )
}
_NUMPY_TYPES = frozenset({("numpy", "ndarray"), ("numpy", "dtype")})
# Plain containers and scalars: protocols < 4 name some of them as globals (e.g. `builtins.set`).
_BUILTINS = frozenset(
    {"dict", "list", "tuple", "set", "frozenset", "bytes", "bytearray"}
    | {"str", "int", "float", "complex", "bool"}
)
# Protocols 0-2 pickle `bytes` (numpy's raw array buffer) as `_codecs.encode(str, "latin1")`.
_CODECS = frozenset({("_codecs", "encode")})


class RefusedGlobalError(pickle.UnpicklingError):
    """The pickle references a global outside the allow-list."""


def _numpy_core_attr(module: str, name: str) -> Any:
    """The installed numpy's `<core>.<module>.<name>`, whichever spelling (`_core` / `core`) it ships."""
    for core in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{core}.{module}"), name)
        except (ImportError, AttributeError):
            continue
    raise RefusedGlobalError(f"numpy has no {module}.{name}")


class SafeUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only the globals a DragBench `meta_data.pkl` needs."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 (pickle API)
        if (module, name) in _NUMPY_GLOBALS:
            return _numpy_core_attr(*_NUMPY_GLOBALS[(module, name)])
        if (module, name) in _NUMPY_TYPES:
            return getattr(importlib.import_module("numpy"), name)
        if module == "builtins" and name in _BUILTINS:
            return getattr(importlib.import_module("builtins"), name)
        if (module, name) in _CODECS:
            return getattr(importlib.import_module("_codecs"), name)
        raise RefusedGlobalError(f"refused global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102 (pickle API)
        raise RefusedGlobalError(f"refused persistent id {pid!r}")


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle `data` allowing only numpy arrays/scalars and builtin containers.

    Args:
        data: the pickle bytes.
        source: name used in error messages (usually the file path).

    Returns:
        The unpickled object.

    Raises:
        InvalidSampleError: a refused global ("<source>: refused global os.system …") or a corrupt pickle.
    """
    try:
        return SafeUnpickler(io.BytesIO(data)).load()
    except RefusedGlobalError as exc:
        raise invalid(source, f"{exc} (only numpy arrays/scalars and plain containers are allowed)") from None
    except Exception as exc:  # corrupt/truncated pickles raise many types (EOFError, KeyError, ValueError…)
        raise invalid(source, f"corrupt pickle ({type(exc).__name__}: {exc})") from exc


def safe_load(path: str | Path) -> Any:
    """Read and unpickle `path` with :func:`safe_loads`; a missing file raises InvalidSampleError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise invalid(path, f"cannot read ({exc.strerror or exc})") from exc
    return safe_loads(data, source=str(path))
