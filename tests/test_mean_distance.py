"""Mean Distance point matching (eval.mean_distance) against known answers with an exact patch featurizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eval.mean_distance import cosine_match_maps, mean_distance
from eval.patch_featurizer import PatchFeaturizer

H, W = 48, 80  # non-square on purpose


def texture(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """Seeded random RGB texture: every 5×5 patch is unique, so matching is exact."""
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def translate(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Content moves by (+dx, +dy) pixels (wrapping; tests keep points away from the wrap seam)."""
    return np.roll(image, shift=(dy, dx), axis=(0, 1))


HANDLES = np.array([[20.0, 15.0], [50.0, 30.0], [35.0, 22.0]])  # (x, y)


def md(orig: np.ndarray, edit: np.ndarray, handles, targets, **kw):
    feat = PatchFeaturizer(radius=2)
    return mean_distance(feat(orig), feat(edit), handles, targets, orig.shape[:2], **kw)


def test_translated_texture_found_at_target():
    img = texture()
    s = np.array([7, -4])  # (dx, dy)
    dist, matched = md(img, translate(img, *s), HANDLES, HANDLES + s)
    np.testing.assert_allclose(dist, 0.0, atol=1.0)
    np.testing.assert_array_equal(matched, HANDLES + s)  # exact here: every patch is unique


def test_untouched_image_gives_raw_handle_target_distance():
    img = texture()
    targets = HANDLES + np.array([[3.0, 4.0], [-6.0, 8.0], [10.0, 0.0]])
    dist, matched = md(img, img, HANDLES, targets)
    np.testing.assert_allclose(dist, [5.0, 10.0, 10.0])
    np.testing.assert_array_equal(matched, HANDLES)


@pytest.mark.parametrize("shift", [(5, 0), (0, -6), (-3, 4)])
def test_shift_s_target_t_gives_norm_h_plus_s_minus_t(shift):
    img = texture(seed=1)
    s = np.array(shift, dtype=float)
    targets = HANDLES + np.array([[8.0, 1.0], [-2.0, -5.0], [4.0, 4.0]])
    dist, _ = md(img, translate(img, *shift), HANDLES, targets)
    expected = np.linalg.norm(HANDLES + s - targets, axis=1)
    np.testing.assert_allclose(dist, expected, atol=1.0)


def test_handle_rounded_to_nearest_pixel_target_used_as_given():
    img = texture()
    dist, matched = md(img, img, [[20.4, 14.6]], [[23.5, 15.0]])
    np.testing.assert_array_equal(matched, [[20.0, 15.0]])
    np.testing.assert_allclose(dist, [3.5])


def test_chunked_cosine_equals_full_upsampled_cosine_similarity():
    """Reference: the official formula on full-size bilinear maps (odd grids, C > one channel chunk)."""
    g = torch.Generator().manual_seed(0)
    fo, fe = torch.randn(150, 7, 11, generator=g), torch.randn(150, 9, 5, generator=g)
    size = (37, 53)
    handles_rc = torch.tensor([[0, 0], [36, 52], [17, 30]])
    up_o = F.interpolate(fo[None], size=size, mode="bilinear")  # (1, C, H, W)
    up_e = F.interpolate(fe[None], size=size, mode="bilinear")  # (1, C, H, W)
    cos = torch.nn.CosineSimilarity(dim=1)
    ref = torch.stack([cos(up_o[:, :, r, c, None, None], up_e)[0] for r, c in handles_rc.tolist()])
    out = cosine_match_maps(fo, fe, handles_rc, size)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_coarse_feature_grid_is_upsampled_to_image_size():
    """Features on a 4× coarser grid, one peaked channel: the match is where the upsampled peak is."""
    fo = torch.zeros(2, 12, 20)
    fo[0] = 1.0  # constant channel: every original position has the same feature (1, 0)
    fe = torch.zeros(2, 12, 20)
    fe[1] = 1.0
    fe[0, 6, 10] = 1.0
    fe[1, 6, 10] = 0.0  # only coarse cell (6, 10) holds (1, 0): upsampled, its centre pixel matches
    dist, matched = mean_distance(fo, fe, [[0.0, 0.0]], [[0.0, 0.0]], (H, W))
    # align_corners=False: coarse cell centre (6, 10) maps to pixel (6.5·4 − 0.5, 10.5·4 − 0.5) = (25.5, 41.5)
    assert matched[0, 0] in (41.0, 42.0) and matched[0, 1] in (25.0, 26.0)


def test_masked_variant_restricts_argmax_to_mask():
    img = texture()
    mask = np.zeros((H, W), bool)
    mask[:, 40:] = True  # the handle at x=20 is outside: m-MD must pick a pixel inside
    _, matched = md(img, img, [[20.0, 15.0]], [[60.0, 15.0]], variant="masked", mask=mask)
    assert mask[int(matched[0, 1]), int(matched[0, 0])]
    full = np.ones((H, W), bool)
    d_masked, _ = md(img, img, HANDLES, HANDLES + 3, variant="masked", mask=full)
    d_std, _ = md(img, img, HANDLES, HANDLES + 3)
    np.testing.assert_array_equal(d_masked, d_std)


@pytest.mark.parametrize("mask", [None, np.zeros((H, W), bool), np.ones((H + 1, W), bool)])
def test_masked_variant_rejects_missing_empty_or_missized_mask(mask):
    img = texture()
    with pytest.raises(ValueError, match="mask"):
        md(img, img, HANDLES, HANDLES, variant="masked", mask=mask)


def test_normalised_variant_is_percent_of_longer_side():
    img = texture()
    targets = HANDLES + np.array([[3.0, 4.0], [-6.0, 8.0], [10.0, 0.0]])
    d_norm, _ = md(img, img, HANDLES, targets, variant="normalised")
    np.testing.assert_allclose(d_norm, np.array([5.0, 10.0, 10.0]) * 100.0 / max(H, W))


def test_unknown_variant_lists_choices():
    img = texture()
    with pytest.raises(ValueError, match="standard, masked, normalised"):
        md(img, img, HANDLES, HANDLES, variant="mmd")
