"""FastDrag (methods/fastdrag): the warp and hole filling by known answers, key/value injection, the method on
the tiny backbone, and the held-out real-sample check (protocol §9)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from shared_data import OFFICIAL_REF, REAL_SAMPLES

from dragbench.diffusion.attention import StoredKeyValues, self_attention_layers, up_block_start_layer
from dragbench.sample import DragSample
from methods.fastdrag.hole_filling import fill_holes
from methods.fastdrag.method import FastDrag
from methods.fastdrag.warp import circumscribed_circle, points_on_latent, region_on_latent, warp_latent


def _blob_scene() -> tuple[torch.Tensor, torch.Tensor]:
    """A 16x16 one-channel latent of ones with a 3x3 blob of fives around (8, 6); region rows 4-12, cols 3-13."""
    latent = torch.ones(1, 1, 16, 16)
    latent[0, 0, 7:10, 5:8] = 5.0
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[4:13, 3:14] = True
    return latent, region


def test_circle_and_stretch_factor_known_answers():
    _, region = _blob_scene()
    centre, radius = circumscribed_circle(region)
    assert centre.tolist() == [8.0, 8.0]  # centre of the bounding box rows 4..12, cols 3..13
    assert float(radius) == pytest.approx(math.hypot(4, 5), abs=1e-5)  # to the corner (4, 3)
    from methods.fastdrag.warp import stretch_factors

    # C one pixel right of A = (8, 6.25): the ray leaves the circle at P = (8, 8 + r), so |PC| / |AP|
    scale = stretch_factors(torch.tensor([[8.0, 7.25]]), torch.tensor([8.0, 6.25]), centre, radius)
    ap = 8 + math.hypot(4, 5) - 6.25
    assert float(scale) == pytest.approx((ap - 1) / ap, rel=1e-6)


def test_a_single_handle_moves_the_blob_to_the_target_and_vacates_pixels_to_zero():
    latent, region = _blob_scene()
    warp = warp_latent(latent, region, torch.tensor([[8.0, 6.25]]), torch.tensor([[8.0, 9.25]]))
    pixels = torch.nonzero(region).tolist()
    assert warp.destinations[pixels.index([8, 6])].tolist() == [8, 9]  # the handle's content lands on the target
    assert float(warp.latent[0, 0, 8, 9]) == 5.0
    assert float(warp.latent[0, 0, 7, 6]) == 0.0 and bool(warp.holes[7, 6])  # vacated: zero, marked a hole
    assert int(warp.holes.sum()) == 17 and bool((warp.latent[0, 0][warp.holes] == 0).all())
    assert torch.equal(warp.latent[0, 0][~region], latent[0, 0][~region])  # outside the region untouched
    # first write wins: every written pixel's destination is unique
    dest = warp.destinations[warp.written]
    assert len({tuple(d) for d in dest.tolist()}) == len(dest)


def test_holes_are_filled_from_the_nearest_neighbours_weighted_one_over_k():
    latent, region = _blob_scene()
    warp = warp_latent(latent, region, torch.tensor([[8.0, 6.25]]), torch.tensor([[8.0, 9.25]]))
    filled = fill_holes(warp.latent, warp.holes)[0, 0]
    # (7, 6): left 1, up 1 (a hole filled before with 1), right 5 and down 1 at k = 1
    assert float(filled[7, 6]) == pytest.approx((1 + 1 + 5 + 1) / 4, abs=1e-6)
    # (9, 6): down (10, 6) is a hole, so the nearest non-hole below is (11, 6) at k = 2
    assert float(filled[9, 6]) == pytest.approx((1 + 1 + 5 + 0.5) / 3.5, abs=1e-6)
    # (10, 6): its upper neighbour is the hole (9, 6), already filled (in-place row-major order)
    assert float(filled[10, 6]) == pytest.approx((1 + 15 / 7 + 1 + 1) / 4, abs=1e-6)
    assert torch.equal(filled[~warp.holes], warp.latent[0, 0][~warp.holes])


def _fill_in_place_reference(x: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """The official order written as loops (test oracle): holes in row-major order, each the 1/k-weighted mean
    of the nearest non-zero pixel left/right/up/down, in place."""
    x = x.copy()
    h, w = holes.shape
    nonzero = ~holes.copy()
    for i in range(h):
        for j in range(w):
            if not holes[i, j]:
                continue
            total, acc = 0.0, np.zeros(x.shape[0])
            for di, dj in ((0, -1), (0, 1), (-1, 0), (1, 0)):
                k = 1
                while 0 <= i + k * di < h and 0 <= j + k * dj < w:
                    if nonzero[i + k * di, j + k * dj]:
                        acc += x[:, i + k * di, j + k * dj] / k
                        total += 1 / k
                        break
                    k += 1
            x[:, i, j] = acc / total
            nonzero[i, j] = True
    return x


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hole_filling_equals_the_in_place_loop_on_random_holes(seed):
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn(1, 4, 12, 17, generator=gen, dtype=torch.float64)
    holes = torch.rand(12, 17, generator=gen) < 0.4
    holes[0, 3] = False  # (0, 0) may be a hole, but the first row must keep a known pixel
    expected = _fill_in_place_reference(latent[0].numpy(), holes.numpy())
    np.testing.assert_allclose(fill_holes(latent, holes)[0].numpy(), expected, atol=1e-10)


def test_hole_filling_refuses_a_first_hole_without_neighbours():
    holes = torch.zeros(4, 4, dtype=torch.bool)
    holes[0, :] = True
    holes[:, 0] = True
    with pytest.raises(ValueError, match="first hole"):
        fill_holes(torch.ones(1, 1, 4, 4), holes)


def test_a_region_pixel_exactly_on_the_handle_is_not_written():
    latent, region = _blob_scene()
    warp = warp_latent(latent, region, torch.tensor([[8.0, 6.0]]), torch.tensor([[8.0, 9.0]]))
    pixels = torch.nonzero(region).tolist()
    on_handle = pixels.index([8, 6])
    assert warp.destinations[on_handle].tolist() == [-1, -1] and not bool(warp.written[on_handle])


def test_region_and_points_follow_the_official_grids():
    mask = np.zeros((341, 512), dtype=bool)
    mask[100:140, 200:260] = True
    region = region_on_latent(mask, (42, 64))  # floor(341 / 8) = 42 rows, as the VAE gives
    rows, cols = torch.nonzero(region, as_tuple=True)
    # nearest to the 170 x 256 grid: rows 50-69, cols 100-129; bilinear (no antialias) to 42 x 64 samples
    # grid rows (i + 0.5) * 170 / 42 - 0.5: i = 12 -> 50.1 (in), 16 -> 66.3 (in), 17 -> 70.3 (out); cols 4j + 1.5
    assert (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())) == (12, 16, 25, 32)
    # (x, y) = (94, 57) on a 128 x 128 image: grid (row, col) = round(28.5, 47.0) = (28, 47) half to even, / 4
    assert points_on_latent(np.array([[94.0, 57.0]]), (128, 128)).tolist() == [[7.0, 11.75]]
    assert points_on_latent(np.array([[94.0, 57.0]]), (128, 128), vae_scale_factor=4).tolist() == [[14.0, 23.5]]


def test_stored_key_values_inject_the_recorded_keys_and_values(tiny_backbone):
    unet = tiny_backbone.unet
    start = up_block_start_layer(unet)
    assert self_attention_layers(unet)[start].startswith("up_blocks.") and start == 7  # SD-1.5 topology
    cond = tiny_backbone.condition("a photo")
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain_x = tiny_backbone.predict_noise(x, 101, cond)
        plain_y = tiny_backbone.predict_noise(y, 101, cond)
        kv = StoredKeyValues(unet, start_layer=start)
        with kv:
            kv.on_step(0, 101)
            assert torch.equal(tiny_backbone.predict_noise(x, 101, cond), plain_x)  # recording changes nothing
        assert len(kv.store) == 9  # 9 up-block self-attention layers x 1 timestep
        kv.mode = "inject"
        with kv:
            kv.on_step(0, 101)
            same = tiny_backbone.predict_noise(x, 101, cond)
            injected_y = tiny_backbone.predict_noise(y, 101, cond)
            kv.on_step(1, 201)
            with pytest.raises(KeyError, match="timestep 201"):
                tiny_backbone.predict_noise(y, 201, cond)
    torch.testing.assert_close(same, plain_x, atol=1e-6, rtol=0)  # own keys/values back: same output
    assert float((injected_y - plain_y).abs().max()) > 1e-3  # y attends to x's keys/values


def _sample(size: int = 64) -> DragSample:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), dtype=bool)
    mask[16:48, 16:48] = True
    return DragSample(
        "toy/a",
        "toy",
        "a photo",
        image,
        mask,
        handles=np.array([[30.0, 30.0]]),
        targets=np.array([[38.0, 30.0]]),
    )


def test_edit_returns_the_input_size_no_handles_and_the_required_info(tiny_backbone):
    method = FastDrag(tiny_backbone)
    assert method.unet_source == "own" and method.backbone is tiny_backbone  # auto on the tiny model
    result = method.edit(_sample())
    assert result.image.shape == (64, 64, 3) and result.image.dtype == np.uint8
    assert result.handles is None  # no tracking (docstring)
    assert result.info["iterations"] == 0 and result.info["unet"] == "own"
    assert {"time/inversion", "time/warp", "time/denoise"} <= set(result.info)
    assert result.info["holes"] > 0 and result.info["region_pixels"] == 16
    np.testing.assert_array_equal(method.edit(_sample()).image, result.image)  # deterministic


def test_unet_knob_loads_another_unet_folder_and_records_it(tiny_backbone, tmp_path):
    from dragbench.backbone import build_tiny

    build_tiny(seed=1).unet.save_pretrained(tmp_path / "lcm" / "unet")  # a pipeline folder with unet/
    method = FastDrag(tiny_backbone, unet=str(tmp_path / "lcm"))
    assert method.unet_source == str(tmp_path / "lcm") and method.backbone.unet is not tiny_backbone.unet
    assert method.backbone.vae is tiny_backbone.vae  # only the UNet is swapped
    result = method.edit(_sample())
    assert result.info["unet"] == str(tmp_path / "lcm")
    own = FastDrag(tiny_backbone, unet=None).edit(_sample())
    assert own.info["unet"] == "own" and not np.array_equal(result.image, own.image)


def test_bad_settings_say_which_knob():
    from dragbench.backbone import build_tiny

    with pytest.raises(ValueError, match="inversion_step"):
        FastDrag(build_tiny(), inversion_step=11)
    with pytest.raises(ValueError, match="guidance_scale"):
        FastDrag(build_tiny(), guidance_scale=7.5)


def test_weight_requirements_name_the_lcm_unet_only_for_a_hub_backbone(tmp_path):
    hub = {"pretrained": "stable-diffusion-v1-5/stable-diffusion-v1-5", "local_files_only": True}
    (row,) = FastDrag.weight_requirements("auto", hub)
    assert row.source == "SimianLuo/LCM_Dreamshaper_v7" and row.file == "unet/"
    assert FastDrag.weight_requirements("auto", {"pretrained": str(tmp_path)}) == []
    assert FastDrag.weight_requirements(None, hub) == []


@pytest.mark.skipif(not (REAL_SAMPLES.is_dir() and OFFICIAL_REF.is_dir()), reason="shared data not found")
@pytest.mark.parametrize(
    ("resize", "sizes"),
    [
        pytest.param(128, [(128, 128), (88, 128)], id="resized-128"),
        pytest.param(None, [(512, 512), (341, 512)], id="full-size", marks=pytest.mark.slow),  # ~100 s in all
    ],
)
def test_held_out_real_samples_run_ok_same_size_and_deterministic(run_on_real_samples, resize, sizes):
    """`experiments.run method=fastdrag model=sd15 model.pretrained=<tiny> dataset=dragbench` on 2 real samples
    (one square, one 512x341): status ok, output of the input's size, identical across two runs."""
    images = []
    for run in ("a", "b"):
        rows, edits = run_on_real_samples(
            run,
            "method=fastdrag",
            "model.local_files_only=true",
            "dataset.categories=[building_city_view,building_countryside_view]",
            "dataset.limit=2",
            f"dataset.resize={'null' if resize is None else resize}",
        )
        assert [r["status"] for r in rows] == ["ok", "ok"], [r.get("error") for r in rows]
        assert [r["info/unet"] for r in rows] == ["own", "own"]  # auto on a local backbone folder
        images.append(edits)
    assert [im.shape[:2] for im in images[0]] == sizes  # the inputs' (H, W)
    for a, b in zip(*images, strict=True):
        np.testing.assert_array_equal(a, b)
