"""Progress inside sweeps: `job k/n <overrides>` from Hydra's job number and the sweep's saved length."""

from __future__ import annotations

import logging
import re

from omegaconf import OmegaConf

from experiments.sweep_progress import job_label, sweep_length

BASIC = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def _multirun_yaml(tmp_path, params: dict, task: list[str], target: str = BASIC):
    path = tmp_path / "multirun.yaml"
    saved = {"hydra": {"sweeper": {"_target_": target, "params": params}, "overrides": {"task": task}}}
    OmegaConf.save(OmegaConf.create(saved), path)
    return path


def test_sweep_length_is_what_the_basic_sweeper_expands(tmp_path):
    fig7 = {"ablation": ",".join(f"a{i}" for i in range(14))}
    assert sweep_length(_multirun_yaml(tmp_path, fig7, ["preset=offline"])) == 14
    assert sweep_length(_multirun_yaml(tmp_path, fig7, ["ablation=a1,a2", "seed=1,2,3"])) == 6  # CLI wins
    assert sweep_length(_multirun_yaml(tmp_path, {}, ["method.lora_steps=range(0,100,20)"])) == 5
    assert sweep_length(_multirun_yaml(tmp_path, {}, ["x=1"], target="optuna.Sweeper")) is None
    assert sweep_length(tmp_path / "absent.yaml") is None


def test_multirun_logs_job_k_of_n_and_sample_lines(run_app, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    sweep = tmp_path / "sweep"
    run_app(
        "-m",
        "experiment=fig7",
        "method=knob_echo",
        "eval=fast",
        "ablation=unet_block_2,paper_default",
        f"hydra.sweep.dir={sweep}",
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "dragbench.progress"]
    starts = [line for line in lines if line.endswith(": started")]
    assert len(starts) == 2
    assert starts[0] == "job 1/2 ablation=unet_block_2: started"  # the swept key only
    assert re.match(r"job 2/2 ablation=paper_default, [\d.]+ (s/job|job/s), ETA 0:00:\d\d: started$", starts[1])
    assert "job 2/2 ablation=paper_default | sample 1/2 art_work/synthetic_0000" in lines
    assert "job 2/2 ablation=paper_default | sample 2/2 land_scape/synthetic_0001, " in "\n".join(lines)


def test_job_label_shows_the_swept_keys():
    job = ["preset=offline", "ablation=lora_steps_40", "+seed=3"]
    assert job_label(job, ["ablation", "seed"]) == "ablation=lora_steps_40,+seed=3"
    assert job_label(job, []) == "preset=offline,ablation=lora_steps_40,+seed=3"
