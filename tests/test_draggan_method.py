"""DragGAN as a DragMethod (protocol §5): config <-> constructor, GAN inversion, square-canvas adapter on a real
non-square DragBench sample, category routing, explicit LPIPS failure."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from shared_data import REAL_SAMPLES

from dragbench import load_sample
from dragbench.backbone import MissingWeightsError
from dragbench.sample import DragSample
from methods.base import DragMethod
from methods.draggan import DragGAN
from methods.draggan.canvas import image_to_square, mask_to_square, paste_square, plan_square
from methods.draggan.projector import ReconstructionLoss, pivotal_tuning, project
from methods.draggan.stylegan2 import build_tiny_generator

REPO = Path(__file__).resolve().parents[1]
REAL = REAL_SAMPLES
INFO_KEYS = {
    "time/inversion",
    "time/drag",
    "iterations",
    "reached_targets",
    "peak_mem_mb",
    "weights",
    "recon_mse",
    "mapping",
    "gan_model",
    "time/routing",
}


def tiny_method(**overrides) -> DragGAN:
    cfg = OmegaConf.load(REPO / "conf/method/draggan_tiny.yaml")
    cfg.device, cfg.seed = "cpu", 0
    kwargs = OmegaConf.to_container(cfg, resolve=True)
    kwargs.pop("_target_")
    return DragGAN(**{**kwargs, **overrides})


@pytest.mark.parametrize("name", ["draggan", "draggan_tiny"])
def test_yaml_keys_are_exactly_the_constructor_kwargs(name: str) -> None:
    cfg = OmegaConf.load(REPO / f"conf/method/{name}.yaml")
    params = inspect.signature(DragGAN.__init__).parameters
    assert cfg["_target_"] == "methods.draggan.DragGAN"
    assert set(cfg) - {"_target_"} == set(params) - {"self"}
    assert all(p.default is inspect.Parameter.empty for p in params.values())  # defaults live in YAML only


def test_paper_config_routes_and_fails_fast_without_weights(make_cfg, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DRAGGAN_CKPT_DIR", str(tmp_path))
    cfg = make_cfg("method=draggan")
    assert cfg.method.domains.ffhq.checkpoint == f"{tmp_path}/stylegan2-ffhq-512x512.pkl"
    assert cfg.method.routing == "clip" and cfg.method.clip_checkpoint == "openai/clip-vit-large-patch14"
    assert (cfg.method.lr, cfg.method.r1, cfg.method.r2, cfg.method.lam) == (2e-3, 3, 12, 20)
    assert (cfg.method.feature_block, cfg.method.n_optimized_layers) == (6, 6)
    # name-based routing (the option kept): no CLIP-L and no LPIPS trunk on this machine
    method = instantiate(cfg.method, inversion_loss="mse", routing="category")
    assert isinstance(method, DragMethod) and method.weights == "real"
    assert tiny_method().weights == "random"
    other = _square_sample("land_scape")
    result = method.edit(other)
    assert result.status == "unsupported" and "land_scape" in result.info["reason"]
    assert np.array_equal(result.image, other.image)
    with pytest.raises(FileNotFoundError, match="stylegan2-ffhq-512x512.pkl"):
        method.edit(_square_sample("human_head"))


def test_lpips_without_trunk_raises_one_clear_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(MissingWeightsError, match="inversion_loss=mse"):
        ReconstructionLoss("lpips", "alex")
    with pytest.raises(ValueError, match="lpips|mse"):
        ReconstructionLoss("l2")


def test_inversion_reconstruction_error_falls() -> None:
    g = build_tiny_generator(resolution=64, channel_base=1024, channel_max=16, seed=0)
    z = torch.randn(1, g.z_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        target, _ = g(z)
    proj = project(
        g, target, ReconstructionLoss("mse"), steps=40, lr=0.1, space="w+", w_avg_samples=256, seed=0
    )
    first, last = np.mean(proj.losses[:3]), np.mean(proj.losses[-3:])
    assert last < 0.2 * first, proj.losses  # measured: first 3 steps 0.45, last 3 steps 0.043
    assert proj.ws.shape == (1, g.num_ws, g.w_dim)


def test_w_projection_then_pivotal_tuning_lowers_the_error_and_leaves_g_untouched() -> None:
    g = build_tiny_generator(resolution=32, channel_base=256, channel_max=16, seed=0)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    target = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1  # not in G's range
    loss = ReconstructionLoss("mse")
    proj = project(g, target, loss, steps=10, lr=0.1, space="w", w_avg_samples=64, seed=0)
    assert torch.equal(proj.ws[:, 0], proj.ws[:, -1])  # W: one latent for every layer
    tuned, losses = pivotal_tuning(g, proj, target, loss, steps=15, lr=3e-3)
    assert losses[-1] < losses[0]
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items())  # tuned a copy
    assert not any(p.requires_grad for p in tuned.parameters())


def _square_sample(category: str, size: int = 96) -> DragSample:
    rng = np.random.default_rng(0)
    image = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    mask = np.zeros((size, size), dtype=bool)
    return DragSample(
        f"{category}/s", category, "a photo", image, mask, np.array([[40.0, 40.0]]), np.array([[50.0, 44.0]])
    )


def test_canvas_mapping_round_trip_and_pad_mode() -> None:
    pts = np.array([[100.0, 50.0], [300.0, 80.0]])
    crop = plan_square(341, 512, pts, res=128, mode="auto")
    assert (crop.mode, crop.side, crop.y0) == ("crop", 341, 0)
    assert crop.x0 == round(200 - 341 / 2)  # centred on the points' box, clamped into the image
    assert np.allclose(crop.from_square(crop.to_square(pts)), pts)
    assert np.allclose(crop.to_square(np.array([[crop.x0 - 0.5, -0.5]])), [[-0.5, -0.5]])  # pixel edges map
    far = np.array([[5.0, 10.0], [505.0, 300.0]])  # 500 px apart: no 341 px crop holds both
    pad = plan_square(341, 512, far, res=128, mode="auto")
    assert (pad.mode, pad.side, pad.x0, pad.y0) == (
        "pad",
        512,
        0,
        -86,
    )  # (341 - 512) // 2: 86 rows padded on top, 85 below
    with pytest.raises(ValueError, match="canvas=pad"):
        plan_square(341, 512, far, res=128, mode="crop")
    mask = np.zeros((341, 512), dtype=bool)
    mask[:, 256:] = True
    sq = mask_to_square(mask, pad)
    assert sq[64, 100] and not sq[64, 20]  # right half editable
    assert not sq[2, 100]  # padding is never editable
    image = np.full((341, 512, 3), 7, dtype=np.uint8)
    assert image_to_square(image, pad).shape == (128, 128, 3)
    back = paste_square(image, np.full((128, 128, 3), 200, dtype=np.uint8), pad)
    assert back.shape == image.shape and (back == 200).all()  # pad window covers the whole canvas


def test_adapter_on_real_non_square_sample() -> None:
    sample_dir = REAL / "building_countryside_view/building_countryside_view_1"
    if not sample_dir.is_dir():
        pytest.skip(f"real DragBench samples not found at {REAL}")
    sample = load_sample(sample_dir)
    h, w = sample.image.shape[:2]
    assert h != w
    result = tiny_method(max_iters=10, inversion_steps=20).edit(sample)
    assert result.status == "ok" and result.image.shape == (h, w, 3) and result.image.dtype == np.uint8
    assert INFO_KEYS <= set(result.info) and result.info["weights"] == "random"
    m = result.info["mapping"]
    assert m["mode"] == "crop" and m["side"] == min(h, w) and m["res"] == 128
    outside = np.ones((h, w), dtype=bool)
    outside[m["y0"] : m["y0"] + m["side"], m["x0"] : m["x0"] + m["side"]] = False
    assert np.array_equal(result.image[outside], sample.image[outside])  # untouched outside the GAN crop
    assert result.regenerated_box == (m["x0"], m["y0"], m["x0"] + m["side"], m["y0"] + m["side"])
    assert not np.array_equal(result.image[~outside], sample.image[~outside])
    assert result.handles.shape == sample.handles.shape
    x, y = result.handles[:, 0], result.handles[:, 1]  # tracked handles, mapped back to original pixels
    assert np.all(
        (x >= m["x0"] - 1) & (x <= m["x0"] + m["side"]) & (y >= m["y0"] - 1) & (y <= m["y0"] + m["side"])
    )
    assert result.info["recon_mse"] < 1.0 and result.info["iterations"] <= 10


def test_full_body_domain_edits_through_the_padded_rectangle() -> None:
    """draggan_tiny's `human` domain is StyleGAN-Human's layout (R x R/2, padded to R x R as DragGAN loads it):
    inversion, drag and paste run on the square canvas, whose side bands the generator paints white."""
    method = tiny_method(routing="category", category_routes={"*": "human"}, max_iters=3, inversion_steps=5)
    g, _ = method.generator("human")
    assert g.synthesis.square is False and g.synthesis.b4.const.shape[-2:] == (4, 2)
    sample = _square_sample("human_full_body")
    result = method.edit(sample)
    assert result.status == "ok" and result.info["gan_model"] == "human"
    assert result.image.shape == sample.image.shape and result.handles.shape == sample.handles.shape
    band = result.image[:, :20].astype(float)  # 128-px canvas: 32 white columns each side -> 24 at 96 px
    assert band.min() >= 250, band.min()  # white padding (1.0 -> 255), whatever the inversion did inside
    assert result.image[:, 30:66].astype(float).std() > 5  # the generated rectangle in the middle


def test_unsupported_category_returns_the_original() -> None:
    method = tiny_method(routing="category", category_routes={"human_head": "ffhq", "*": None})
    sample = _square_sample("interior_design")
    result = method.edit(sample)
    assert result.status == "unsupported" and "interior_design" in result.info["reason"]
    assert np.array_equal(result.image, sample.image) and result.handles is None
    with pytest.raises(ValueError, match="category_routes.animals='afhq' is not a key of method.domains"):
        tiny_method(routing="category", category_routes={"animals": "afhq"})
    with pytest.raises(ValueError, match="routing must be one of"):
        tiny_method(routing="name")
