"""DragDiffusion vs the official code's recorded outputs ($DRAGBENCH_SHARED_DATA/official-ref, see its README).

Tiny random SD-1.5-topology weights, CPU fp32, no LoRA, 3 DragBench samples x configs a (unet_block 3) and
c (unet_block 2). Checked: token ids (exact), inverted latent (<= 1e-5), initial grid points (exact), first
losses (<= 1e-5 relative) and early trajectory (exact); for the short runs the whole run: iterations, final
handles, updated latent, images (PSNR >= 40 dB vs dragged_image.png).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from shared_data import OFFICIAL_REF

from dragbench import load_sample
from methods.dragdiffusion.method import DragDiffusion

REF = OFFICIAL_REF
pytestmark = pytest.mark.skipif(not REF.is_dir(), reason=f"official reference outputs not found at {REF}")

UNET_BLOCK = {"a_inv35_feat3": 3, "c_inv35_feat2": 2}  # official feature index 3/2 = up_blocks[2]/[1]
SAMPLES = ["animals/animal_2", "interior_design/interior_design_2", "land_scape/land_scape_1"]
SHORT_RUNS = [  # README: runs short enough to match end to end
    pytest.param("a_inv35_feat3", "animals/animal_2", id="a-animal_2"),
    pytest.param(
        "a_inv35_feat3", "interior_design/interior_design_2", id="a-interior_design_2", marks=pytest.mark.slow
    ),
    pytest.param("c_inv35_feat2", "animals/animal_2", id="c-animal_2", marks=pytest.mark.slow),
]
LONG_RUNS = [
    # 33 iterations: same trajectory, iterations and final handles as the official run, but from step ~20 our
    # summation order (diffusers 0.42) lets later losses drift up to 2.7e-3 and the latent 6e-3 (the README's
    # "may drift" class; the official code itself is exact here only at its own thread count and arithmetic)
    pytest.param("c_inv35_feat2", "land_scape/land_scape_1", id="c-land_scape_1", marks=pytest.mark.slow),
    pytest.param("a_inv35_feat3", "land_scape/land_scape_1", id="a-land_scape_1", marks=pytest.mark.slow),
    pytest.param(
        "c_inv35_feat2", "interior_design/interior_design_2", id="c-interior_design_2", marks=pytest.mark.slow
    ),
]
N_EARLY = 10  # losses / trajectory entries compared tightly in every run


@pytest.fixture(scope="module")
def backbone():
    from dragbench.backbone import load_pretrained

    return load_pretrained(str(REF / "tiny-sd15"), local_files_only=True, device="cpu")


def _reference(config: str, sample: str) -> tuple[dict, dict[str, np.ndarray]]:
    out = REF / "outputs" / config / sample
    with np.load(out / "arrays.npz") as arrays:
        return json.loads((out / "result.json").read_text()), dict(arrays)


def _method(backbone, config: str, **overrides) -> DragDiffusion:
    return DragDiffusion(backbone, unet_block=UNET_BLOCK[config], lora_steps=0, **overrides)


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float((np.abs(a - b) / np.abs(b)).max())


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_token_ids_are_exact(backbone):
    tok = backbone.tokenizer
    ids = tok("a photo of a sofa", padding="max_length", max_length=77, return_tensors="pt").input_ids[0]
    assert ids.tolist() == [0, 322, 81, 73, 80, 85, 336, 80, 327, 322, 84, 80, 71, 322] + [1] * 63
    lengths = []
    for sample in SAMPLES:
        ids = DragDiffusion(backbone, lora_steps=0)._token_ids(
            load_sample(REF / "inputs-128" / sample).prompt
        )
        lengths.append(ids.tolist().index(1) + 1)
    assert lengths == [21, 15, 47]  # README: ids up to and including the first id 1


@pytest.mark.parametrize("config", list(UNET_BLOCK))
@pytest.mark.parametrize("sample", SAMPLES)
def test_initial_points_are_exact(backbone, config, sample):
    result, _ = _reference(config, sample)
    grid_hw, handles, targets = _method(backbone, config).grid_points(
        load_sample(REF / "inputs-128" / sample)
    )
    assert list(grid_hw) == [result["params"]["sup_res_h"], result["params"]["sup_res_w"]]
    assert handles.tolist() == result["handle_points_init_internal_rc"]
    assert targets.tolist() == result["target_points_internal_rc"]


@pytest.mark.parametrize("sample", SAMPLES[1:])  # animal_2's inversion is checked by the full run below
def test_inversion_matches(backbone, sample):
    _, arrays = _reference("a_inv35_feat3", sample)
    inverted = _method(backbone, "a_inv35_feat3").invert(load_sample(REF / "inputs-128" / sample))
    assert inverted.shape == arrays["invert_code"].shape
    assert (inverted - torch.from_numpy(arrays["invert_code"])).abs().max() <= 1e-5


@pytest.mark.parametrize(
    ("config", "sample"),
    [
        pytest.param("a_inv35_feat3", "interior_design/interior_design_2", id="a-interior_design_2"),
        pytest.param("c_inv35_feat2", "land_scape/land_scape_1", id="c-land_scape_1"),
        pytest.param("a_inv35_feat3", "land_scape/land_scape_1", id="a-land_scape_1", marks=pytest.mark.slow),
        pytest.param(
            "c_inv35_feat2",
            "interior_design/interior_design_2",
            id="c-interior_design_2",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_first_losses_and_early_trajectory_match(backbone, config, sample):
    """Drag from the stored inverted latent for N_EARLY iterations."""
    result, arrays = _reference(config, sample)
    method = _method(backbone, config, max_iters=N_EARLY)
    drag = method.drag(load_sample(REF / "inputs-128" / sample), torch.from_numpy(arrays["invert_code"]))
    n = min(N_EARLY, len(arrays["losses"]))
    assert len(drag.losses) >= n
    assert _rel(drag.losses[:n], arrays["losses"][:n]) <= 1e-5
    k = min(len(drag.trajectory), len(arrays["handle_traj"]))
    np.testing.assert_array_equal(torch.stack(drag.trajectory[:k]).numpy(), arrays["handle_traj"][:k])


def _check_full_run(backbone, config: str, sample_id: str, exact: bool) -> None:
    result, arrays = _reference(config, sample_id)
    sample = load_sample(REF / "inputs-128" / sample_id)
    method = _method(backbone, config)
    trace = method.run(sample)
    assert (trace.inverted - torch.from_numpy(arrays["invert_code"])).abs().max() <= 1e-5
    assert trace.timestep == result["ddim_t_of_drag"] == 681
    # from our own inverted latent (~2e-6 off), long runs amplify differences after a few Adam steps
    n = min(N_EARLY if exact else 3, len(arrays["losses"]))
    assert _rel(trace.drag.losses[:n], arrays["losses"][:n]) <= 1e-5
    ref_float = torch.from_numpy(arrays["ref_image_float"])
    assert (trace.reference_float - ref_float).abs().max() <= 2e-4  # README: ~1e-4 from the inversion alone
    final = np.array(result["handle_points_final_internal_rc"])
    if not exact:  # long runs drift (README): compare the end qualitatively
        assert trace.drag.reached and np.abs(trace.drag.handles_rc.numpy() - final).max() <= 1
        assert abs(trace.drag.iterations - result["drag_loop_iterations"]) <= 5
        return
    assert trace.drag.iterations == result["drag_loop_iterations"]
    assert trace.drag.steps == result["optimizer_steps"]
    assert trace.drag.reached == result["reached_targets_early_stop"]
    assert _rel(trace.drag.losses, arrays["losses"]) <= 1e-4
    np.testing.assert_array_equal(torch.stack(trace.drag.trajectory).numpy(), arrays["handle_traj"])
    assert (trace.drag.latent - torch.from_numpy(arrays["updated_code"])).abs().max() <= 5e-5
    assert (trace.edited_float - torch.from_numpy(arrays["gen_image_float"])).abs().max() <= 5e-4
    png = np.asarray(Image.open(REF / "outputs" / config / sample_id / "dragged_image.png").convert("RGB"))
    assert trace.image.shape == png.shape and np.abs(trace.image.astype(int) - png).max() <= 1
    assert _psnr(trace.image, png) >= 40.0
    # EditResult: final handles back in input pixels with the README's formula
    edit = method.edit(sample)
    np.testing.assert_allclose(edit.handles, result["handle_points_final_input_xy"])
    np.testing.assert_array_equal(edit.image, trace.image)


@pytest.mark.parametrize(("config", "sample"), SHORT_RUNS)
def test_short_runs_match_end_to_end(backbone, config, sample):
    _check_full_run(backbone, config, sample, exact=True)


@pytest.mark.parametrize(("config", "sample"), LONG_RUNS)
def test_long_runs_match_early_and_end_close(backbone, config, sample):
    _check_full_run(backbone, config, sample, exact=False)
