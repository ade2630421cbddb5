"""GoodDrag vs the official code's recorded outputs (tests/data/official_gooddrag_ref, see its README).

zewei-Zhang/GoodDrag fc01bc1, tiny random SD-1.5-topology weights, CPU fp32, no LoRA, 3 DragBench samples at
128 px, the bench values and the same with latent_lr 0.002 (several AlDD timesteps). Checked: inverted
latent (<= 1e-5), reference trajectory x_{t-1}, first losses (<= 1e-4 relative; the first loss is the motion
term alone, so a wrong r1, beta, (2 r1)^2 weight, target patch or feature block moves it), every tracking round,
final handles (within 1 supervision-grid cell), the output image (PSNR >= 35 dB). The long lr 0.002 animal_2
run is compared through its first drag timestep only (README: it drifts later).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from shared_data import OFFICIAL_REF

from dragbench import load_sample
from methods.gooddrag.method import GoodDrag

DATA = Path(__file__).parent / "data" / "official_gooddrag_ref"
INPUTS = OFFICIAL_REF / "inputs-128"
pytestmark = pytest.mark.skipif(not INPUTS.is_dir(), reason=f"official-ref inputs not found at {OFFICIAL_REF}")

LR = {"bench": 0.02, "lr0.002": 0.002}
END_TO_END = [
    pytest.param("bench", "interior_design/interior_design_2", id="bench-interior_design_2"),
    pytest.param("bench", "animals/animal_2", id="bench-animal_2", marks=pytest.mark.slow),
    pytest.param("bench", "land_scape/land_scape_1", id="bench-land_scape_1", marks=pytest.mark.slow),
    pytest.param(
        "lr0.002", "interior_design/interior_design_2", id="lr0.002-interior_design_2", marks=pytest.mark.slow
    ),
]


@pytest.fixture(scope="module")
def backbone():
    from dragbench.backbone import load_pretrained

    return load_pretrained(str(OFFICIAL_REF / "tiny-sd15"), local_files_only=True, device="cpu")


def _reference(config: str, sample: str) -> tuple[dict, dict[str, np.ndarray]]:
    out = DATA / config / sample
    with np.load(out / "arrays.npz") as arrays:
        return json.loads((out / "result.json").read_text()), dict(arrays)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def _run(backbone, config: str, sample: str):
    torch.set_num_threads(1)  # the reference ran on 1 thread (summation order)
    return GoodDrag(backbone, vae="auto", lora_steps=0, latent_lr=LR[config]).run(load_sample(INPUTS / sample))


def _check_first_timestep(trace, result: dict, arrays: dict) -> None:
    assert float(np.abs(trace.inverted.numpy() - arrays["inverted"]).max()) <= 1e-5
    assert trace.timesteps[0] == result["drag_steps"][0]["t"] == 741  # round(0.75 * 50) = 38 inverted steps
    ours, official = trace.drags[0], result["drag_steps"][0]
    np.testing.assert_allclose(ours.losses[:5], official["losses"][:5], rtol=1e-4)
    np.testing.assert_allclose(ours.motion_losses[:5], official["drag_losses"][:5], rtol=1e-4)
    n_ref = len(trace.reference_prev)
    np.testing.assert_allclose(torch.cat(trace.reference_prev).numpy(), arrays["ref_xprev"][:n_ref], atol=1e-5)
    assert ours.tracks[:3] == official["tracks"][:3]  # first-iteration round + two rounds after 3 steps each


@pytest.mark.parametrize(("config", "sample"), END_TO_END)
def test_matches_the_official_run_end_to_end(backbone, config, sample):
    result, arrays = _reference(config, sample)
    trace = _run(backbone, config, sample)
    _check_first_timestep(trace, result, arrays)
    assert [d.timestep for d in trace.drags] == [s["t"] for s in result["drag_steps"]]
    for ours, official in zip(trace.drags, result["drag_steps"], strict=True):
        assert len(ours.losses) == len(official["losses"])
        # float-order noise may move one tracking round of a later timestep by a cell (lr0.002 land_scape_1:
        # round 9 of t = 721, back in step the round after); the losses stay within 1e-3
        differing = [
            np.abs(np.subtract(a, b)).max() for a, b in zip(ours.tracks, official["tracks"], strict=True) if a != b
        ]
        assert len(differing) <= (0 if ours is trace.drags[0] else 1) and max(differing, default=0) <= 1.0
        np.testing.assert_allclose(ours.losses, official["losses"], rtol=1e-3)
    final = np.array(result["drag_steps"][-1]["handles_out"])
    assert np.abs(trace.handles_rc.numpy() - final).max() <= 1.0
    official_image = np.array(Image.open(DATA / config / sample / "dragged_image.png"))
    assert trace.image.shape == official_image.shape
    assert _psnr(trace.image, official_image) >= 35.0


@pytest.mark.slow
def test_run_whose_stop_float_order_may_move_matches_until_then(backbone):
    """lr0.002 land_scape_1 ends its drag phase on the no-change counter, a decision float summation order can
    move: on the recording CPU one tracking round of t = 721 was a cell off and the run matched end to end
    (59 dB); on an AVX-512 AMD EPYC t = 701 ran 30 steps instead of 27 and the drag went on to t = 681 (24 dB).
    What must hold anywhere: the first timestep exactly, the shared timesteps step for step up to the last one,
    the final handles within a cell."""
    result, arrays = _reference("lr0.002", "land_scape/land_scape_1")
    trace = _run(backbone, "lr0.002", "land_scape/land_scape_1")
    _check_first_timestep(trace, result, arrays)
    ours_t, official_t = [d.timestep for d in trace.drags], [s["t"] for s in result["drag_steps"]]
    shared = min(len(ours_t), len(official_t))
    assert ours_t[:shared] == official_t[:shared] and abs(len(ours_t) - len(official_t)) <= 1
    for ours, official in zip(trace.drags[: shared - 1], result["drag_steps"][: shared - 1], strict=True):
        assert len(ours.losses) == len(official["losses"])
        np.testing.assert_allclose(ours.losses, official["losses"], rtol=1e-3)
        assert sum(a != b for a, b in zip(ours.tracks, official["tracks"], strict=True)) <= 1
    final = np.array(result["drag_steps"][-1]["handles_out"])
    assert np.abs(trace.handles_rc.numpy() - final).max() <= 1.0


@pytest.mark.slow
def test_long_run_matches_through_its_first_drag_timestep(backbone):
    result, arrays = _reference("lr0.002", "animals/animal_2")
    trace = _run(backbone, "lr0.002", "animals/animal_2")
    _check_first_timestep(trace, result, arrays)
    np.testing.assert_allclose(trace.drags[0].losses, result["drag_steps"][0]["losses"], rtol=1e-3)
    assert trace.drags[0].tracks == result["drag_steps"][0]["tracks"]  # all 11 rounds of t = 741
