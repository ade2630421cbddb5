"""What a drag-editing sample is (DragBench, protocol §1) and the one place where point conventions convert.

Outside the harness points are (x, y) image pixels (x = column, y = row), as on disk; inside the math
modules they are (row, col) on some grid. `xy_to_rc` / `rc_to_xy` are the only converters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class InvalidSampleError(ValueError):
    """A DragBench sample that cannot be used; the message names the file and the reason."""


@dataclass
class DragSample:
    """One drag-editing sample.

    Attributes:
        sample_id: "<category>/<name>".
        category: DragBench category folder name.
        prompt: the sample's text prompt.
        image: uint8 array (H, W, 3), RGB.
        mask: bool array (H, W); True = editable region. All False means "no regularisation".
        handles: float array (N, 2), (x, y) image pixels.
        targets: float array (N, 2), (x, y) image pixels.
        meta: free-form extras (e.g. the resize applied, ground truth of synthetic samples).
    """

    sample_id: str
    category: str
    prompt: str
    image: np.ndarray
    mask: np.ndarray
    handles: np.ndarray
    targets: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.sample_id.split("/", 1)[-1]

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def n_pairs(self) -> int:
        return int(len(self.handles))


def xy_to_rc(points_xy: np.ndarray) -> np.ndarray:
    """(N, 2) (x, y) -> (N, 2) (row, col); same units, just swapped columns."""
    points_xy = np.asarray(points_xy)
    return points_xy[:, ::-1].copy()


def rc_to_xy(points_rc: np.ndarray) -> np.ndarray:
    """(N, 2) (row, col) -> (N, 2) (x, y); same units, just swapped columns."""
    points_rc = np.asarray(points_rc)
    return points_rc[:, ::-1].copy()
