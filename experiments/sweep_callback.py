"""End-of-sweep callbacks: <sweep_dir>/summary.csv (one row per job) for every multirun, plus the Fig. 7
figure for the Fig. 7 experiments only.

`SweepSummary` is registered for every multirun (conf/hydra/default.yaml); the fig7 experiments
(conf/experiment/fig7*.yaml) replace it with `Fig7Summary`. The table is experiments.sweep_summary (any sweep
dir, after the fact too), the figure experiments.figures; the paper-default marker is each knob's value in
the multirun's composed config.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from experiments.figures import MixedScaleError, plot_fig7, save_figure
from experiments.results_store import atomic_write_csv
from experiments.sweep_summary import SUMMARY_CSV, collect_sweep, knob_defaults, sweep_failure

__all__ = [
    "FIGURE_STEM",
    "SUMMARY_CSV",
    "Fig7Summary",
    "SweepSummary",
    "collect_sweep",
    "sweep_failure",
    "write_summary",
]

log = logging.getLogger(__name__)

FIGURE_STEM = "fig7"


def write_summary(
    sweep_dir: str | Path,
    knobs: list[str] | None = None,
    defaults: dict[str, Any] | None = None,
    figure: bool = True,
) -> pd.DataFrame:
    """collect_sweep + write <sweep_dir>/summary.csv (+ the Fig. 7 figure <sweep_dir>/fig7.png/.pdf).

    The figure is skipped (one error line) when the jobs' MDs are in different units
    (figures.MixedScaleError); summary.csv is written regardless.

    Args:
        sweep_dir: the multirun dir.
        knobs: dotted config keys reported per job.
        defaults: {knob short name: default value} marked in the figure (sweep_summary.knob_defaults).
        figure: draw the Fig. 7 figure too.
    """
    sweep_dir = Path(sweep_dir)
    summary = collect_sweep(sweep_dir, knobs)
    atomic_write_csv(sweep_dir / SUMMARY_CSV, summary)
    drawn = "none"
    if figure:
        try:
            drawn = ", ".join(map(str, save_figure(plot_fig7(summary, defaults), sweep_dir / FIGURE_STEM)))
        except MixedScaleError as err:
            log.error("No figure: %s", err)
    log.info("Sweep summary: %s (%d jobs); figure: %s", sweep_dir / SUMMARY_CSV, len(summary), drawn)
    return summary


class SweepSummary(Callback):
    """Hydra callback of every multirun (conf/hydra/default.yaml): after the last job, <sweep_dir>/summary.csv
    (one row per job), then exit 1 when a job has no usable result, so failures never vanish.

    Args:
        knobs: dotted config keys to report per job.
    """

    draws_figure = False

    def __init__(self, knobs: list[str] | None = None) -> None:
        self.knobs = list(knobs or [])

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Write summary.csv (and, for Fig. 7, the figure) into the sweep dir; exit 1 if a job has no result.

        Raises:
            SystemExit: (code 1) a job failed or every sample of a job failed, after everything is written.
        """
        defaults = knob_defaults(config, self.knobs)  # the base config: before the sweeper set the knobs
        summary = write_summary(config.hydra.sweep.dir, self.knobs, defaults, figure=self.draws_figure)
        failure = sweep_failure(summary)
        if failure is not None:
            log.error("%s", failure)
            raise SystemExit(1)  # Hydra turns a callback's Exception into a warning; SystemExit sets the rc


class Fig7Summary(SweepSummary):
    """SweepSummary plus the Fig. 7 figure; the fig7 experiments (conf/experiment/fig7*.yaml) register it.

    Args:
        knobs: the Fig. 7 knobs; their values in the multirun's composed config (before the sweeper sets
            them: the method's YAML) are the defaults the figure marks.
    """

    draws_figure = True
