"""A method's own VAE/UNet in place of the backbone's (dragbench/diffusion/components.py)."""

from __future__ import annotations

import pytest
import torch

from dragbench.backbone import build_tiny
from dragbench.diffusion.components import component_requirements, resolve_component, with_component
from dragbench.weights import MissingWeightsError

PAPER_VAE = "stabilityai/sd-vae-ft-mse"


@pytest.mark.parametrize(
    ("choice", "backbone_name", "expected"),
    [
        ("auto", "stable-diffusion-v1-5/stable-diffusion-v1-5", PAPER_VAE),  # the paper's setting
        ("auto", "tiny", None),  # the tiny model: the backbone's own
        ("own", "stable-diffusion-v1-5/stable-diffusion-v1-5", None),
        (None, "stable-diffusion-v1-5/stable-diffusion-v1-5", None),
        ("org/other-vae", "tiny", "org/other-vae"),
    ],
)
def test_auto_takes_the_papers_component_only_for_a_hub_backbone(choice, backbone_name, expected):
    assert resolve_component(choice, PAPER_VAE, backbone_name) == expected


def test_auto_on_a_local_backbone_folder_is_the_backbones_own(tmp_path):
    assert resolve_component("auto", PAPER_VAE, str(tmp_path)) is None
    assert component_requirements("auto", PAPER_VAE, str(tmp_path), "vae", "VAE", "vae") == []


def test_a_local_component_folder_is_loaded_swapped_and_changes_the_fingerprint(tmp_path):
    tiny = build_tiny()
    other = build_tiny(seed=1)
    other.vae.save_pretrained(tmp_path / "pipe" / "vae")  # a pipeline folder with vae/
    (rows,) = component_requirements(str(tmp_path / "pipe"), PAPER_VAE, "tiny", "vae", "VAE", "vae")
    assert rows.present and rows.file == "vae/"
    swapped, label = with_component(tiny, "vae", str(tmp_path / "pipe"), PAPER_VAE)
    assert label == str(tmp_path / "pipe") and swapped.unet is tiny.unet
    assert torch.equal(swapped.vae.decoder.conv_out.weight, other.vae.decoder.conv_out.weight)
    assert swapped.fingerprint != tiny.fingerprint
    same, own = with_component(tiny, "vae", "auto", PAPER_VAE)
    assert same is tiny and own == "own"


def test_a_missing_component_says_what_and_how_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (row,) = component_requirements(
        "auto",
        PAPER_VAE,
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "vae",
        "GoodDrag VAE",
        "vae",
        local_files_only=True,
    )
    assert not row.ready and row.source == PAPER_VAE
    with pytest.raises(MissingWeightsError, match=r"hf download stabilityai/sd-vae-ft-mse.*vae=own") as err:
        with_component(build_tiny(), "vae", PAPER_VAE, PAPER_VAE, local_files_only=True)
    assert "\n" not in str(err.value)
