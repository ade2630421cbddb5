"""The do-nothing baseline: returns the input image unchanged (DESIGN.md "Core types").

Useful as a floor (MD = the initial handle-target distance when features are faithful, IF = 1) and as the
fastest method for smoke-testing the whole harness.
"""

from __future__ import annotations

from dragbench.sample import DragSample
from methods.base import EditResult, StageTimes, required_info


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
        return EditResult(image=image, handles=None, info=required_info(times.seconds, 0, "cpu"))
