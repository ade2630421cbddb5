"""The real-path rehearsal (benchmarks/rehearse.py): published configs and layouts, its checks, and (slow) the
whole `--quick` run on full-size real samples ($DRAGBENCH_SHARED_DATA/dragbench-real)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from diffusers import AutoencoderKL, UNet2DConditionModel
from shared_data import REAL_SAMPLES
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from benchmarks.nvidia_pickle import write_nvidia_pickle
from benchmarks.rehearse import (
    DRAGGAN_CATEGORIES,
    METHODS,
    PRECISION_METHODS,
    QUICK_KNOBS,
    RehearsalWeights,
    main,
    plan_jobs,
)
from benchmarks.rehearse_report import check_job, check_missing_checkpoints, stage_table
from benchmarks.rehearse_weights import DRAGGAN_PICKLES, SD15, SD21, clip_vocab_and_merges, write_tokenizer
from experiments import REPO_ROOT
from methods.draggan.checkpoint import load_generator
from methods.draggan.stylegan2 import build_tiny_generator

REAL_SAMPLES = REAL_SAMPLES


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("spec", "unet", "vae", "text"),
    [(SD15, 859_520_964, 83_653_863, 123_060_480), (SD21, 865_910_724, 83_653_863, 340_387_840)],
    ids=["sd15", "sd21"],
)
def test_pipeline_configs_have_the_published_parameter_counts(spec, unet: int, vae: int, text: int) -> None:
    with torch.device("meta"):  # shapes only: no memory, no init
        assert _n_params(UNet2DConditionModel(**spec.unet)) == unet
        assert _n_params(AutoencoderKL(**spec.vae)) == vae
        assert _n_params(CLIPTextModel(CLIPTextConfig(**spec.text))) == text


def test_tokenizer_has_clips_id_layout(tmp_path: Path) -> None:
    vocab, merges = clip_vocab_and_merges()
    assert (len(vocab), len(merges)) == (49408, 48894)
    write_tokenizer(tmp_path / "sd21", pad_token="!")
    tok = CLIPTokenizer.from_pretrained(tmp_path / "sd21")
    assert (len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (49408, 49406, 49407, 0)
    ids = tok("a cat", padding="max_length", max_length=tok.model_max_length).input_ids
    assert (
        len(ids) == 77
        and ids[0] == 49406
        and ids[ids.index(49407) + 1 :] == [0] * (77 - ids.index(49407) - 1)
    )
    assert {p.name for p in (tmp_path / "sd21").iterdir()} >= {
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
    }


@pytest.mark.parametrize("layout", ["flat", "nested"])
def test_nvidia_pickle_loads_with_our_restricted_loader(tmp_path: Path, layout: str) -> None:
    g = build_tiny_generator(resolution=32, channel_base=256, channel_max=16, seed=3)
    syn = dict(g.init_kwargs["synthesis_kwargs"], num_fp16_res=0, conv_clamp=None)
    kwargs = {k: v for k, v in g.init_kwargs.items() if k != "synthesis_kwargs"}
    kwargs = {**kwargs, **syn} if layout == "flat" else {**kwargs, "synthesis_kwargs": syn}
    path = tmp_path / "stylegan2-ffhq-512x512.pkl"
    write_nvidia_pickle(g, kwargs, path, dataset="ffhq")
    raw = path.read_bytes()
    assert (
        b"torch_utils.persistence" in raw and b"_reconstruct_persistent_obj" in raw and b"dnnlib.util" in raw
    )
    loaded = load_generator(path)
    z = torch.randn(1, g.z_dim, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded.generator(z)[0], g(z)[0])
    assert loaded.meta["persistence_version"] == 6


def test_plan_jobs_are_the_readme_commands(tmp_path: Path) -> None:
    w = RehearsalWeights(tmp_path / "sd15", tmp_path / "sd21", tmp_path / "th", tmp_path / "gan")
    jobs = plan_jobs(w, tmp_path / "data", tmp_path / "runs", quick=True, precisions=["fp32"])
    by_name = {j.name: j for j in jobs}
    dd = by_name["dragdiffusion"].overrides
    assert f"model.pretrained={w.sd15}" in dd and f"eval.pretrained={w.sd21}" in dd
    assert set(QUICK_KNOBS["dragdiffusion"]) <= set(dd) and "method.precision=fp32" in dd
    assert by_name["dragdiffusion"].env["TORCH_HOME"] == str(w.torch_home)
    assert by_name["draggan"].env["DRAGGAN_CKPT_DIR"] == str(w.draggan_dir)
    missing = by_name["draggan_no_checkpoints"]
    assert not missing.expect_ok and not any(Path(missing.env["DRAGGAN_CKPT_DIR"]).iterdir())
    caches = [j.env["DRAGBENCH_CACHE_DIR"] for j in jobs if j.expect_ok]
    assert len(set(caches)) == len(caches)  # no job reuses another's LoRA or latents


def test_one_dragdiffusion_job_per_precision_mode(tmp_path: Path) -> None:
    w = RehearsalWeights(tmp_path / "sd15", tmp_path / "sd21", tmp_path / "th", tmp_path / "gan")
    jobs = plan_jobs(
        w, tmp_path / "data", tmp_path / "runs", quick=False, precisions=["official_fp16", "fp32"]
    )
    assert [j.name for j in jobs] == [
        "dragdiffusion_official_fp16",
        "dragdiffusion_fp32",
        "draggan",
        "draggan_no_checkpoints",
    ]
    assert (
        "method.precision=official_fp16" in jobs[0].overrides and "method.precision=fp32" in jobs[1].overrides
    )
    assert not any(
        o.startswith("dataset.limit") or o in QUICK_KNOBS["dragdiffusion"] for o in jobs[0].overrides
    )


def test_every_sd15_method_can_be_rehearsed_on_the_same_folder(tmp_path: Path) -> None:
    w = RehearsalWeights(tmp_path / "sd15", tmp_path / "sd21", tmp_path / "th", tmp_path / "gan")
    jobs = plan_jobs(
        w, tmp_path / "data", tmp_path / "runs", quick=True, precisions=["official_fp16", "fp32"], methods=METHODS
    )
    assert [j.name for j in jobs] == [
        "dragdiffusion_official_fp16",
        "dragdiffusion_fp32",
        "gooddrag",
        "dragnoise_official_fp16",  # DragNoise has method.precision too
        "dragnoise_fp32",
        "fastdrag",
        "sdedrag",
        "draggan",
        "draggan_no_checkpoints",
    ]
    for job in jobs[:7]:
        method = job.name.split("_")[0]
        assert f"method={method}" in job.overrides and f"model.pretrained={w.sd15}" in job.overrides
        assert set(QUICK_KNOBS[method]) <= set(job.overrides) and "dataset.limit=1" in job.overrides
        assert any(o.startswith("method.precision=") for o in job.overrides) == (method in PRECISION_METHODS)
    no_gan = plan_jobs(w, tmp_path / "data", tmp_path / "runs", quick=False, methods=("fastdrag",))
    assert [j.name for j in no_gan] == ["fastdrag"]
    with pytest.raises(ValueError, match="unknown rehearsal methods"):
        plan_jobs(w, tmp_path / "data", tmp_path / "runs", quick=False, methods=("dragdiffusion", "magic"))


def _job_dir(tmp_path: Path, rows: list[dict], metrics: dict) -> Path:
    job = tmp_path / "job"
    job.mkdir()
    pd.DataFrame(rows).to_csv(job / "results.csv", index=False)
    (job / "metrics.json").write_text(pd.Series(metrics).to_json())
    return job


ROW = dict(
    sample_id="animals/animal_1",
    status="ok",
    error=None,
    mean_distance=12.5,
    image_fidelity=0.8,
    eval_weights="real",
    method_weights="real",
    seconds=10.0,
    seconds_lora=2.0,
    seconds_drag=3.0,
    peak_mem_mb=2048.0,
    device="cpu",
    **{"info/precision": "fp32"},
)


def test_check_job_passes_real_finite_ok_rows_and_tabulates_stages(tmp_path: Path) -> None:
    job = _job_dir(tmp_path, [ROW], dict(mean_distance=12.5, image_fidelity=0.8, eval_weights="real"))
    check = check_job("dragdiffusion", job, 0, 11.0)
    assert check.passed, check.summary
    table = stage_table([check], quick=True)
    assert "| dragdiffusion | lora | 2.0 | | fp32 | 17–25 s |" in table
    assert "| dragdiffusion | peak memory | | 2.0 GB (CPU RSS) | fp32 | 12–14 GB |" in table


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (dict(status="failed", error="boom"), "failed (boom)"),
        (dict(mean_distance=np.nan), "mean_distance not finite"),
        (dict(eval_weights="random"), "eval_weights = ['random'], expected real"),
    ],
)
def test_check_job_names_each_problem(tmp_path: Path, change: dict, problem: str) -> None:
    job = _job_dir(
        tmp_path, [{**ROW, **change}], dict(mean_distance=1.0, image_fidelity=1.0, eval_weights="real")
    )
    check = check_job("dragdiffusion", job, 0, 1.0)
    assert not check.passed and any(problem in p for p in check.problems), check.problems


def test_missing_checkpoint_check(tmp_path: Path) -> None:
    line = "[run][ERROR] - method.checkpoints: stylegan2-ffhq-512x512.pkl missing in /x (DRAGGAN_CKPT_DIR)"
    good = subprocess.CompletedProcess([], 1, stdout=line + "\n", stderr="")
    assert check_missing_checkpoints("x", tmp_path / "job", good, 1.0).passed
    bad = subprocess.CompletedProcess([], 0, stdout="Traceback (most recent call last)\n", stderr="")
    check = check_missing_checkpoints("x", tmp_path / "job", bad, 1.0)
    assert not check.passed and len(check.problems) == 3, check.problems


def test_without_real_samples_it_skips_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--quick", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"SKIPPED: no DragBench samples under {tmp_path / 'none'} (pass --data DIR)"
    ]
    assert not (tmp_path / "out").exists()  # nothing built


@pytest.mark.slow
@pytest.mark.skipif(not REAL_SAMPLES.is_dir(), reason=f"real DragBench samples not found at {REAL_SAMPLES}")
def test_quick_rehearsal_of_the_real_path(tmp_path: Path) -> None:
    """Full-size random weights in the published layouts, the README's commands, 1 sample per method."""
    out = Path(os.environ.get("DRAGBENCH_REHEARSE_OUT", tmp_path))  # reuse built weights across runs
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.rehearse",
            "--quick",
            "--out",
            str(out),
            "--data",
            str(REAL_SAMPLES),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=3 * 3600,
    )
    print(proc.stdout)  # the commands, the stage table and the checks (shown with -s)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for name in ("dragdiffusion", "draggan", "draggan_no_checkpoints"):
        assert f"PASS {name}:" in proc.stdout
    assert "| dragdiffusion | lora |" in proc.stdout and "| draggan | drag |" in proc.stdout


def test_draggan_names_match_its_config() -> None:
    """The rehearsal's pickle file names and routed categories are the ones conf/method/draggan.yaml uses."""
    conf = yaml.safe_load((REPO_ROOT / "conf/method/draggan.yaml").read_text())
    routes = conf["category_routes"]  # the rehearsal runs method.routing=category
    names = {conf["domains"][d]["checkpoint"].split("/")[-1] for c, d in routes.items() if d is not None}
    assert sorted(names) == sorted(DRAGGAN_PICKLES)
    routed = {c for c, ckpt in routes.items() if ckpt is not None and c != "*"}
    assert routed == set(DRAGGAN_CATEGORIES.strip("[]").split(","))
