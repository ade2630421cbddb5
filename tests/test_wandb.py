"""W&B offline: one run per job inside the job dir, with MD / IF in its summary and the weights tag."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
from harness_fakes import expected_md

from experiments.run import run_from_config
from experiments.wandb_logger import WandbLogger, weights_tag

# The .wandb file is a LevelDB-style log: a 7-byte file header, then 32 KiB blocks of chunks, each with a
# 7-byte header (crc32 uint32, length uint16, type uint8: 1 full, 2 first, 3 middle, 4 last).
FILE_HEADER, CHUNK_HEADER, BLOCK = 7, 7, 32768


def read_wandb_records(path: Path) -> list:
    """All protobuf Records of an offline run's .wandb file (offline runs write no wandb-summary.json)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, chunks, records = path.read_bytes(), FILE_HEADER, [], []
    while pos + CHUNK_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        _, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        if left < CHUNK_HEADER or (length == 0 and kind == 0):  # block padding
            pos += left
            continue
        chunks.append(data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length])
        pos += CHUNK_HEADER + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            records.append(record)
            chunks = []
    return records


def test_offline_run_lives_in_the_job_dir_with_md_and_if(make_cfg, tiny_samples):
    cfg = make_cfg("method=identity", "eval=fast", "logger=wandb")
    assert cfg.logger.mode == "offline"
    metrics = run_from_config(cfg)
    run_dirs = sorted((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    records = _run_records(Path(cfg.paths.output_dir))  # waits for the file to be complete
    summary = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            summary.update(
                {item.key: json.loads(item.value_json) for item in record.summary.update if item.key}
            )
    assert summary["md/all"] == pytest.approx(expected_md(tiny_samples), abs=1e-9)
    assert summary["if/all"] == metrics["image_fidelity"] == 1.0
    assert {f"md/{s.category}" for s in tiny_samples} <= set(summary)
    assert summary["n_samples"] == 2 and summary["weights"] == "random"
    assert (summary["n_ok"], summary["n_failed"], summary["n_unsupported"]) == (2, 0, 0)  # issue 17
    assert summary["md_scale"] == "px@64w" and summary["config_hash"] == metrics["config_hash"]
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert runs[-1].job_type == "Identity"
    assert "weights:random (not comparable)" in runs[-1].tags


def test_weights_tag_and_mode_validation():
    assert weights_tag("real") == "weights:real"
    assert weights_tag("random") == "weights:random (not comparable)"
    with pytest.raises(ValueError, match="offline|online|disabled"):
        WandbLogger(project="p", mode="offlne")


def _run_records(job_dir: Path, wait_s: float = 30.0) -> list:
    """The records of the job's offline run, once its `exit` record is on disk (W&B's service writes the file
    asynchronously: the run can be closed before the last records, e.g. the table's artifact, are flushed)."""
    (run_dir,) = sorted((Path(job_dir) / "wandb").glob("offline-run-*"))
    deadline = time.monotonic() + wait_s
    while True:
        records = read_wandb_records(next(run_dir.glob("*.wandb")))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _run_config(records: list) -> dict:
    run = [r.run for r in records if r.WhichOneof("record_type") == "run"][-1]
    return {item.key: json.loads(item.value_json) for item in run.config.update}


def _samples_table(records: list) -> tuple[list[dict], dict[str, Path]]:
    """The `samples` table's rows (column -> value) and its files (path in the table -> staged file)."""
    (artifact,) = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    files = {entry.path: Path(entry.local_path) for entry in artifact.manifest.contents}
    table = json.loads(files["samples.table.json"].read_text())
    return [dict(zip(table["columns"], row, strict=True)) for row in table["data"]], files


def test_samples_table_has_the_drag_the_edit_md_if_and_status_per_sample(make_cfg, tiny_samples):
    import numpy as np
    import pandas as pd
    from PIL import Image

    from dragbench.visualize import draw_drag
    from experiments.wandb_logger import TABLE_COLUMNS

    cfg = make_cfg("method=identity", "eval=fast", "logger=wandb")
    run_from_config(cfg)
    job = Path(cfg.paths.output_dir)
    rows, files = _samples_table(_run_records(job))
    results = pd.read_csv(job / "results.csv").set_index("sample_id")
    assert [r["sample_id"] for r in rows] == [s.sample_id for s in tiny_samples]
    assert set(rows[0]) == {*TABLE_COLUMNS, "dai_1", "dai_10", "dai_20"}  # + DAI, on by default (eval.dai)
    for row, sample in zip(rows, tiny_samples, strict=True):
        assert row["status"] == "ok" and row["n_pairs"] == sample.n_pairs and row["error"] == ""
        assert row["mean_distance"] == pytest.approx(
            results.loc[sample.sample_id, "mean_distance"], abs=1e-12
        )
        assert row["image_fidelity"] == 1.0
        original = np.asarray(Image.open(files[row["original"]["path"]]).convert("RGB"))
        drawn = draw_drag(
            sample.image, sample.mask, sample.handles, sample.targets
        )  # arrows handle -> target
        np.testing.assert_array_equal(original, drawn)
        edited = np.asarray(Image.open(files[row["edited"]["path"]]).convert("RGB"))
        assert edited.shape == sample.image.shape and not np.array_equal(edited, original)  # no mask tint
    assert all(job in path.parents for path in files.values())  # staged in the job dir, not in ~/.local


def test_sweep_runs_share_a_group_and_carry_the_swept_knob(run_app, tmp_path):
    sweep = tmp_path / "sweep"
    run_app(
        "-m",
        "experiment=fig7",
        "method=knob_echo",
        "eval=fast",
        "logger=wandb",
        "ablation=unet_block_2,paper_default",
        f"hydra.sweep.dir={sweep}",
    )
    records = [_run_records(sweep / str(job)) for job in (0, 1)]
    groups = {[r.run for r in rec if r.WhichOneof("record_type") == "run"][-1].run_group for rec in records}
    assert len(groups) == 1 and groups.pop().endswith("/sweep")
    configs = [_run_config(rec) for rec in records]
    assert [c["sweep"] for c in configs] == [{"ablation": "unet_block_2"}, {"ablation": "paper_default"}]
    assert [c["method"]["unet_block"] for c in configs] == [2, 3]  # the knob itself, for parallel coordinates
