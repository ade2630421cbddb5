"""Image Fidelity = 1 − LPIPS(alex, v0.1) at 224×224 (protocol §3; DragDiffusion `run_eval_similarity.py`).

The LPIPS linear layers ship inside the `lpips` package (lpips/weights/v0.1/alex.pth); the AlexNet trunk is a
torchvision checkpoint in the torch hub cache, downloaded on first use under the harness's one download policy
(`dragbench.weights.downloads_allowed`: not with `local_files_only` or HF_HUB_OFFLINE set).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from urllib.parse import urlparse

import lpips
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models import AlexNet_Weights

from dragbench.backbone import resolve_device
from dragbench.weights import (
    WeightFile,
    declares_weights,
    downloads_allowed,
    fetch_url_file,
    url_file_requirement,
)

log = logging.getLogger(__name__)

LPIPS_SIZE = (224, 224)  # both images bilinearly resized to 224×224 before LPIPS (run_eval_similarity.py)
LPIPS_NET = "alex"  # protocol §3: LPIPS(net="alex")
LPIPS_VERSION = "0.1"  # lpips' default and latest linear-layer calibration
# torchvision's AlexNet ImageNet checkpoint file name (alexnet-owt-7be5be79.pth), read from torchvision.
ALEXNET_CHECKPOINT = Path(urlparse(AlexNet_Weights.IMAGENET1K_V1.url).path).name


def to_lpips_input(image: np.ndarray) -> Tensor:
    """uint8 (H, W, 3) -> float32 (1, 3, H, W) in [−1, 1] (x / 127.5 − 1, as the official script)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    return torch.tensor(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def image_fidelity(net: torch.nn.Module, image0: Tensor, image1: Tensor) -> Tensor:
    """1 − LPIPS between two image batches, each first resized bilinearly to 224×224.

    Args:
        net: an `lpips.LPIPS` module (or anything with its call signature).
        image0: (B, 3, H, W) in [−1, 1].
        image1: (B, 3, H', W') in [−1, 1].

    Returns:
        (B,) fidelities; exactly 1.0 for identical inputs.
    """
    x0 = F.interpolate(image0, size=LPIPS_SIZE, mode="bilinear")  # (B, 3, 224, 224)
    x1 = F.interpolate(image1, size=LPIPS_SIZE, mode="bilinear")  # (B, 3, 224, 224)
    return 1.0 - net(x0, x1).reshape(-1)  # LPIPS returns (B, 1, 1, 1)


def alexnet_checkpoint_path() -> Path:
    """Where torchvision keeps the AlexNet trunk: `$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_CHECKPOINT


class LpipsFidelity:
    """Callable `(original, edited) -> 1 − LPIPS` on uint8 images, with a weights label.

    Args:
        net: a built `lpips.LPIPS` module (eval mode, no grad).
        weights: "real" (ImageNet AlexNet trunk) or "random" (seeded random trunk: not comparable).
        device: where the network runs.
    """

    def __init__(self, net: lpips.LPIPS, weights: str, device: torch.device) -> None:
        self.net = net.to(device).eval().requires_grad_(False)
        self.weights = weights
        self.device = device

    @torch.no_grad()
    def __call__(self, original: np.ndarray, edited: np.ndarray) -> float:
        """1 − LPIPS of two uint8 (H, W, 3) images (any sizes: both go to 224×224)."""
        x0 = to_lpips_input(original).to(self.device)
        x1 = to_lpips_input(edited).to(self.device)
        return float(image_fidelity(self.net, x0, x1)[0])


def fidelity_requirements(weights: str = "real", local_files_only: bool = False) -> list[WeightFile]:
    """What `build_fidelity` reads: the AlexNet trunk for weights="real", nothing for "random"."""
    if weights != "real":
        return []
    path, url = alexnet_checkpoint_path(), AlexNet_Weights.IMAGENET1K_V1.url
    how = f"`wget -P {path.parent} {url}` (or set TORCH_HOME to a folder holding hub/checkpoints/{path.name})"
    auto = downloads_allowed(local_files_only)
    return [url_file_requirement("AlexNet trunk (LPIPS for Image Fidelity)", path, url, auto, how)]


@declares_weights(fidelity_requirements)
def build_fidelity(
    weights: str = "real", seed: int = 0, device: str = "auto", local_files_only: bool = False
) -> LpipsFidelity:
    """Build the LPIPS(alex, v0.1) fidelity metric.

    Args:
        weights: "real" needs the torchvision AlexNet checkpoint in the torch hub cache (downloaded there on
            first use unless `local_files_only` / HF_HUB_OFFLINE); "random" uses a random trunk initialised
            after `torch.manual_seed(seed)`.
        seed: torch seed for the random trunk (ignored for "real").
        device: "cpu", "cuda", "auto".
        local_files_only: never download the AlexNet trunk.

    Raises:
        MissingWeightsError: weights="real" and the AlexNet checkpoint is neither cached nor downloadable.
        ValueError: unknown weights label.
    """
    if weights not in ("real", "random"):
        raise ValueError(f"fidelity weights must be 'real' or 'random', got {weights!r}")
    if weights == "real" and not alexnet_checkpoint_path().is_file():
        url = AlexNet_Weights.IMAGENET1K_V1.url
        fetch_url_file("LPIPS AlexNet trunk", alexnet_checkpoint_path(), url, local_files_only)
    # fork_rng: seed the random trunk without touching the caller's global RNG state
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(seed)
        warnings.simplefilter("ignore", UserWarning)  # lpips passes torchvision's deprecated `pretrained=`
        net = lpips.LPIPS(net=LPIPS_NET, version=LPIPS_VERSION, pnet_rand=weights == "random", verbose=False)
    log.info("LPIPS(%s, v%s) built with a %s trunk", LPIPS_NET, LPIPS_VERSION, weights)
    return LpipsFidelity(net, weights, resolve_device(device))
