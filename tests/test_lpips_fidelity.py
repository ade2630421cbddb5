"""Image Fidelity = 1 − LPIPS(alex, v0.1) at 224×224 (eval.lpips_fidelity)."""

from __future__ import annotations

from pathlib import Path

import lpips
import numpy as np
import pytest
import torch

from dragbench.backbone import MissingWeightsError
from eval.lpips_fidelity import (
    ALEXNET_CHECKPOINT,
    alexnet_checkpoint_path,
    build_fidelity,
    image_fidelity,
    to_lpips_input,
)


@pytest.fixture(scope="module")
def fidelity():
    return build_fidelity("random", seed=0, device="cpu")


def photo(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / 10.0
    img = np.stack([np.sin(xx), np.cos(yy + xx / 2), np.sin(yy)], axis=-1) * 100 + 128
    return (img + rng.normal(0, 5, img.shape)).clip(0, 255).astype(np.uint8)


def test_identical_images_give_exactly_one(fidelity):
    img = photo()
    assert fidelity(img, img) == 1.0


def test_more_noise_strictly_lower_fidelity(fidelity):
    img = photo()
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, img.shape)
    scores = [fidelity(img, (img + sigma * noise).clip(0, 255).astype(np.uint8)) for sigma in (2, 8, 24, 64)]
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False)), scores
    assert scores[0] < 1.0


def test_both_inputs_resized_to_224_bilinear():
    seen = []

    def recording_net(x0, x1):
        seen.extend([tuple(x0.shape), tuple(x1.shape)])
        return torch.zeros(x0.shape[0], 1, 1, 1)

    out = image_fidelity(recording_net, torch.zeros(2, 3, 50, 70), torch.zeros(2, 3, 300, 120))
    assert seen == [(2, 3, 224, 224)] * 2 and out.tolist() == [1.0, 1.0]


def test_inputs_scaled_to_minus_one_one():
    x = to_lpips_input(np.array([[[0, 255, 51]]], dtype=np.uint8))
    torch.testing.assert_close(x.flatten(), torch.tensor([-1.0, 1.0, 51 / 127.5 - 1]))


def test_random_trunk_seeded_labelled_and_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = build_fidelity("random", seed=3, device="cpu")
    after = torch.rand(1)
    b = build_fidelity("random", seed=3, device="cpu")
    assert a.weights == "random" and torch.equal(after, expected)  # global RNG not consumed
    for pa, pb in zip(a.net.parameters(), b.net.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_linear_layers_ship_with_lpips_package():
    assert (Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth").is_file()


def test_real_trunk_missing_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert ALEXNET_CHECKPOINT == "alexnet-owt-7be5be79.pth" and alexnet_checkpoint_path() == expected
    with pytest.raises(MissingWeightsError) as info:
        build_fidelity("real")
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError) and "\n" not in msg and str(expected) in msg
    assert not expected.exists()  # nothing downloaded


def test_unknown_weights_label():
    with pytest.raises(ValueError, match="real' or 'random"):
        build_fidelity("pretrained")
