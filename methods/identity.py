"""The do-nothing baseline: returns the input image unchanged (DESIGN.md "Core types").

Useful as a floor (MD = the initial handle-target distance when features are faithful, IF = 1) and as the
fastest method for smoke-testing the whole harness.
"""

from __future__ import annotations

from dragbench.sample import DragSample
from methods.base import EditResult, StageTimes, peak_memory_mb


class Identity:
    """Returns a copy of the sample's image; tracks no points (`handles=None`)."""

    weights = "none"  # no model involved

    def edit(self, sample: DragSample) -> EditResult:
        """Return the sample's image unchanged.

        Args:
            sample: any DragSample.

        Returns:
            EditResult with a copy of `sample.image`, `handles=None`, zero iterations.
        """
        times = StageTimes()
        with times.stage("edit"):
            image = sample.image.copy()
        info = {"iterations": 0, **times.info(), "peak_mem_mb": peak_memory_mb("cpu")}
        return EditResult(image=image, handles=None, info=info)
