"""W&B offline: one run per job inside the job dir, with MD / IF in its summary and the weights tag."""

from __future__ import annotations

import json
import struct
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
    records = read_wandb_records(next(run_dirs[0].glob("*.wandb")))
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
