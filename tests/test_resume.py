"""Crash safety: atomic per-sample writes; a killed job resumes without recomputing finished samples."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from conftest import OFFLINE, cli_env

from experiments.results_store import ResultsStore
from experiments.run import run_from_config

TIMING_COLUMNS = ("seconds", "seconds_edit", "seconds_eval", "peak_mem_mb", "finished_at")


def _edits(log_file: Path) -> list[str]:
    return [line.split()[0] for line in log_file.read_text().splitlines()] if log_file.exists() else []


def _comparable(job: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    results = pd.read_csv(job / "results.csv").drop(columns=list(TIMING_COLUMNS), errors="ignore")
    results = results.sort_values("sample_id").reset_index(drop=True)
    pairs = pd.read_csv(job / "pairs.csv").sort_values(["sample_id", "pair"]).reset_index(drop=True)
    metrics = json.loads((job / "metrics.json").read_text())
    keep = (
        "mean_distance",
        "mean_distance_ci",
        "image_fidelity",
        "image_fidelity_ci",
        "n_samples",
        "n_pairs",
    )
    return results, pairs, {k: metrics[k] for k in keep}


def test_store_commits_a_sample_only_with_its_results_row(tmp_path):
    store = ResultsStore(tmp_path)
    image = np.zeros((4, 4, 3), np.uint8)
    pair = {"sample_id": "a/x", "category": "a", "pair": 0, "distance": 1.5}
    store.write_sample({"sample_id": "a/x", "category": "a", "status": "ok"}, [pair], image)
    store.write_sample({"sample_id": "a/y", "category": "a", "status": "failed", "error": "E"}, [], None)
    # a kill between pairs.csv and results.csv leaves orphan pairs: they are dropped on resume
    orphan = pd.concat([store.pairs(), pd.DataFrame([{**pair, "sample_id": "a/z"}])])
    orphan.to_csv(tmp_path / "pairs.csv", index=False)
    resumed = ResultsStore(tmp_path)
    assert resumed.finished_ids == {"a/x"}  # failed samples are retried by default
    assert list(resumed.pairs()["sample_id"]) == ["a/x"]
    assert ResultsStore(tmp_path, retry_failed=False).finished_ids == {"a/x", "a/y"}
    assert (tmp_path / "edits/a/x/dragged_image.png").exists()
    assert not list(tmp_path.rglob("*.tmp"))  # no temp files left behind


def test_rerunning_a_finished_job_recomputes_nothing(make_cfg, tmp_path):
    log_file = tmp_path / "edits.log"
    overrides = (
        "method=identity",
        "method._target_=harness_fakes.CountingIdentity",
        f"+method.log_file={log_file}",
        "eval=fast",
    )
    first = run_from_config(make_cfg(*overrides))
    stamps = pd.read_csv(tmp_path / "job/results.csv")["finished_at"].tolist()
    second = run_from_config(make_cfg(*overrides))
    assert len(_edits(log_file)) == 2  # two samples, each edited exactly once over both runs
    assert pd.read_csv(tmp_path / "job/results.csv")["finished_at"].tolist() == stamps
    assert second["mean_distance"] == first["mean_distance"] and second["n_samples"] == 2


def test_killed_job_resumes_and_matches_an_uninterrupted_run(make_cfg, tmp_path):
    log_file, job = tmp_path / "edits.log", tmp_path / "job"
    method = (
        "method=identity",
        "method._target_=harness_fakes.CountingIdentity",
        f"+method.log_file={log_file}",
    )
    command = [
        sys.executable,
        "-m",
        "experiments.run",
        *OFFLINE,
        "dataset.n=3",
        "device=cpu",
        "eval=fast",
        "aggregate.n_boot=200",
        *method,
        "+method.delay_s=30",
        f"hydra.run.dir={job}",
    ]
    proc = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=cli_env(tmp_path),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        while not (job / "results.csv").exists():  # the first sample is committed, the second is sleeping
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "first sample never finished"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first = pd.read_csv(job / "results.csv")
    assert len(first) == 1 and not (job / "metrics.json").exists()

    same = (*method, "+method.delay_s=30", "eval=fast", "dataset.n=3")  # the killed job's config
    run_from_config(make_cfg(*same, root=tmp_path))  # resume in place; only the 2nd edit ever logged sleeps
    edits = _edits(log_file)
    done_id = first["sample_id"].iloc[0]
    assert edits.count(done_id) == 1  # never recomputed
    assert sorted(set(edits)) == sorted(pd.read_csv(job / "results.csv")["sample_id"])
    resumed = pd.read_csv(job / "results.csv").set_index("sample_id")
    assert resumed.loc[done_id, "finished_at"] == first["finished_at"].iloc[0]

    reference = tmp_path / "reference"
    run_from_config(make_cfg(*same, root=reference))
    for got, want in zip(_comparable(job), _comparable(reference / "job"), strict=True):
        if isinstance(got, dict):
            assert got == want
        else:
            pd.testing.assert_frame_equal(got, want)
