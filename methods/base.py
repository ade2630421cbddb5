"""The one small protocol every editing method implements (DESIGN.md "Core types")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from dragbench.sample import DragSample


@dataclass
class EditResult:
    """What a method returns for one sample.

    Attributes:
        image: uint8 array (H, W, 3), same H x W as the input sample.
        handles: final tracked handle points (N, 2) in (x, y) image pixels, or None if the method
            does not track points.
        info: anything worth logging: seconds per stage (`time/<stage>`), iterations, peak memory, ...
        status: "ok", or "unsupported" when the method cannot handle this sample (reason in info["reason"]).
    """

    image: np.ndarray
    handles: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"


@runtime_checkable
class DragMethod(Protocol):
    """A drag-editing method: configured once, then `edit` is called per sample.

    A new method is a class with `edit(sample) -> EditResult`, and a `conf/method/<name>.yaml` whose
    `_target_` names the class and whose other keys are its constructor's keyword arguments.
    """

    def edit(self, sample: DragSample) -> EditResult: ...
