"""A job dir belongs to one configuration: config_hash in every row, a rerun under another config refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from experiments.config_identity import ConfigMismatchError, config_diff, config_hash
from experiments.run import run_from_config
from experiments.sweep_callback import collect_sweep

CONFIG = {
    "seed": 42,
    "task_name": "run",
    "tags": ["a"],
    "logger": {"mode": "offline"},
    "paths": {"log_dir": "/x/logs"},
    "store": {"root": "/x/job"},
    "cache": {"root": "/x/cache"},
    "method": {"lora_steps": 80, "cache": {"root": "/x/cache"}, "lora_plan_steps": [0, 80]},
    "eval": {"variant": "standard", "cache": {"root": "/x/cache"}},
    "model": {"pretrained": "sd15", "local_files_only": False},
}


def _changed(**dotted) -> dict:
    config = json.loads(json.dumps(CONFIG))
    for key, value in dotted.items():
        *parents, leaf = key.split("__")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def test_hash_ignores_only_the_result_neutral_keys():
    base = config_hash(CONFIG)
    assert len(base) == 64
    for neutral in (
        _changed(task_name="other"),
        _changed(tags=[]),
        _changed(logger={"mode": "online"}),
        _changed(paths={"log_dir": "/elsewhere"}),
        _changed(store={"root": "/y"}),
        _changed(cache={"root": "/y"}),
        _changed(method__cache={"root": "/y"}),
        _changed(eval__cache=None),
        _changed(method__lora_plan_steps=None),
        _changed(model__local_files_only=True),
    ):
        assert config_hash(neutral) == base
    for relevant in (
        _changed(seed=1),
        _changed(method__lora_steps=40),
        _changed(eval__variant="normalised"),
        _changed(model__pretrained="sd21"),
    ):
        assert config_hash(relevant) != base
    assert config_diff(CONFIG, _changed(seed=1, method__lora_steps=40, tags=["b"])) == [
        "method.lora_steps 80 -> 40",
        "seed 42 -> 1",
    ]
    assert config_diff(CONFIG, {**CONFIG, "device": "cpu"}) == ["device <unset> -> cpu"]


def _snapshot(job: Path) -> dict[str, bytes]:
    names = ("metrics.json", "results.csv", "pairs.csv", "config_resolved.yaml", "config_hash.txt")
    return {name: (job / name).read_bytes() for name in names}


def test_rerun_with_a_changed_knob_refuses_and_leaves_the_job_dir_untouched(make_cfg):
    first = make_cfg("method=knob_echo", "eval=fast")
    metrics = run_from_config(first)
    job = Path(first.paths.output_dir)
    results = pd.read_csv(job / "results.csv")
    assert set(results["config_hash"]) == {metrics["config_hash"]}
    assert (job / "config_hash.txt").read_text().strip() == metrics["config_hash"]
    before = _snapshot(job)

    with pytest.raises(ConfigMismatchError) as err:
        run_from_config(make_cfg("method=knob_echo", "eval=fast", "method.lora_steps=40", "seed=7"))
    message = str(err.value)
    assert "\n" not in message
    assert "method.lora_steps 80 -> 40; seed 42 -> 7" in message and str(job) in message
    assert "hydra.run.dir" in message  # names the way out
    assert _snapshot(job) == before

    # result-neutral changes (tags, logger, cache location) resume the same job dir
    again = run_from_config(make_cfg("method=knob_echo", "eval=fast", "tags=[x]", "logger=wandb"))
    assert again["config_hash"] == metrics["config_hash"] and again["n_ok"] == metrics["n_ok"]
    assert _snapshot(job)["config_resolved.yaml"] == before["config_resolved.yaml"]


def test_rows_of_another_config_are_refused_even_without_config_resolved_yaml(make_cfg):
    cfg = make_cfg("method=identity", "eval=fast")
    run_from_config(cfg)
    job = Path(cfg.paths.output_dir)
    (job / "config_resolved.yaml").unlink()
    (job / "config_hash.txt").unlink()
    results = pd.read_csv(job / "results.csv").assign(config_hash="f" * 64)
    results.to_csv(job / "results.csv", index=False)
    with pytest.raises(ConfigMismatchError, match="ffffffffffff != .*no config_resolved.yaml"):
        run_from_config(make_cfg("method=identity", "eval=fast"))


def test_cli_rerun_with_another_knob_exits_1_with_one_line(run_app, tmp_path, caplog):
    job = tmp_path / "job"
    run_app("method=knob_echo", "eval=fast", f"hydra.run.dir={job}")
    before = _snapshot(job)
    with pytest.raises(SystemExit) as exit_info:
        run_app("method=knob_echo", "eval=fast", "method.unet_block=2", f"hydra.run.dir={job}")
    assert exit_info.value.code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "method.unet_block 3 -> 2" in errors[0]
    assert _snapshot(job) == before
    # Hydra rewrote .hydra/overrides.yaml for the refused run; the summary reads the results' own overrides
    assert "method.unet_block=2" in (job / ".hydra/overrides.yaml").read_text()
    collected = collect_sweep(tmp_path)
    assert list(collected["job"]) == ["job"] and "override:method.unet_block" not in collected
