"""FastDrag (Zhao et al., NeurIPS 2024): one-step latent warp, hole filling, key/value-injected sampling.

Training-free and optimisation-free (protocol §9): DDIM-invert the image 7 of 10 steps while the up blocks'
self-attention keys/values are recorded per timestep; warp the inverted latent once (`warp.py`) and fill the
vacated pixels (`hole_filling.py`); denoise with every up-block self-attention attending to the keys/values
recorded at the same timestep (`dragbench.diffusion.attention.StoredKeyValues`). No LoRA, no drag loop, no
point tracking. The official bench path (XuanjiaZ/FastDrag def3c4e, `drag_bench_evaluation/run_fast_drag.py`
-> `utils/ui_utils.py::run_drag`) is reproduced; `tests/test_fastdrag_official_ref.py` checks the numbers
against it (tests/data/official_fastdrag_ref).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from dragbench.backbone import Backbone
from dragbench.diffusion.attention import StoredKeyValues, up_block_start_layer
from dragbench.diffusion.components import component_requirements, with_component
from dragbench.diffusion.ddim import (
    check_inversion_step,
    ddim_denoise,
    ddim_invert,
    decode_latents,
    encode_image,
    to_uint8,
)
from dragbench.sample import DragSample
from dragbench.validation import validate_sample
from dragbench.weights import FASTDRAG_UNET, WeightFile
from methods.base import EditResult, StageTimes, required_info, reset_peak_memory
from methods.fastdrag.hole_filling import fill_holes
from methods.fastdrag.warp import WarpResult, points_on_latent, region_on_latent, warp_latent

log = logging.getLogger(__name__)


@dataclass
class FastDragTrace:
    """Every intermediate of one edit (tests, notebooks, the official-ref comparison).

    Attributes:
        inverted: (1, 4, h, w) z_t after DDIM inversion (t = 601 for 7 of 10 steps).
        region: (h, w) bool editable region on the latent grid.
        handles_rc, targets_rc: (N, 2) float32 latent (row, col).
        warp: the warped latent (zeros at the holes), the holes and where each region pixel went.
        filled: (1, 4, h, w) the warped latent with its holes filled: the start of sampling.
        denoised: (1, 4, h, w) z_0 after sampling.
        edited_float: (1, 3, 8h, 8w) decoded image in [0, 1].
        image: (H, W, 3) uint8 output (resized to the input size, truncated as official).
        times: seconds per stage.
    """

    inverted: torch.Tensor
    region: torch.Tensor
    handles_rc: torch.Tensor
    targets_rc: torch.Tensor
    warp: WarpResult
    filled: torch.Tensor
    denoised: torch.Tensor
    edited_float: torch.Tensor
    image: np.ndarray
    times: dict[str, float] = field(default_factory=dict)


class FastDrag:
    """FastDrag with the official DragBench settings (protocol §9); keys = conf/method/fastdrag.yaml.

    `EditResult.handles` is None: FastDrag moves content by a fixed warp and never locates the handles
    afterwards, so there is no final point to report (reporting the targets would claim a measurement that was
    never made). MD is measured on the image by the evaluator as for every method.

    Args:
        backbone: SD-1.5-shaped models (real or tiny); shared, left unmodified.
        unet: the UNet to run: "auto" (default) = the paper's LCM-distilled UNet (`FASTDRAG_UNET`) when the
            backbone came from the hub, the backbone's own when it is a local folder or tiny; "own"/None = the
            backbone's own; otherwise a hub id or folder (`dragbench.diffusion.components`). The LCM UNet
            has a `time_cond_proj_dim` input that FastDrag never feeds, so the call is the plain SD one.
        n_inference_steps: DDIM schedule length (official bench: 10).
        inversion_step: DDIM steps inverted and denoised (official: round(0.7 x 10) = 7 -> t = 601).
        guidance_scale: 1.0 only (the official path has no classifier-free guidance).
        seed: torch seed set before every sample (the path draws no random numbers; kept for the protocol).
    """

    def __init__(
        self,
        backbone: Backbone,
        unet: str | None = "auto",
        n_inference_steps: int = 10,
        inversion_step: int = 7,
        guidance_scale: float = 1.0,
        seed: int = 42,
    ) -> None:
        check_inversion_step(inversion_step, n_inference_steps)
        if guidance_scale != 1.0:
            raise ValueError(
                f"guidance_scale={guidance_scale}: only 1.0 (the official FastDrag path, no CFG) is implemented; "
                "set method.guidance_scale=1.0"
            )
        self.backbone, self.unet_source = with_component(backbone, "unet", unet, FASTDRAG_UNET)
        if self.unet_source == "own" and unet == "auto":
            log.info(
                "FastDrag: backbone %s is local, so the backbone's own UNet replaces the LCM UNet", backbone.name
            )
        self.start_layer = up_block_start_layer(self.backbone.unet)
        self.n_inference_steps = n_inference_steps
        self.inversion_step = inversion_step
        self.guidance_scale = guidance_scale
        self.seed = seed

    @staticmethod
    def weight_requirements(unet: str | None, backbone: dict) -> list[WeightFile]:
        """The swapped UNet's files (none for the backbone's own); the backbone declares its own."""
        return component_requirements(
            unet,
            FASTDRAG_UNET,
            str(backbone.get("pretrained", "tiny")),
            "unet",
            "FastDrag UNet (LCM_Dreamshaper_v7)",
            "unet",
            local_files_only=bool(backbone.get("local_files_only", False)),
        )

    # ------------------------------------------------------------------ public API
    def edit(self, sample: DragSample) -> EditResult:
        """Drag-edit one sample: the edited image at the input size; handles None (no tracking)."""
        reset_peak_memory(self.backbone.device)
        trace = self.run(sample)
        info = {
            **required_info(trace.times, 0, self.backbone.device),
            "weights": self.backbone.weights,
            "unet": self.unet_source,
            "latent_hw": list(trace.inverted.shape[-2:]),
            "region_pixels": int(trace.region.sum()),
            "holes": int(trace.warp.holes.sum()),
        }
        return EditResult(image=trace.image, handles=None, info=info)

    def run(self, sample: DragSample) -> FastDragTrace:
        """The whole edit, returning every intermediate (`edit` packages this)."""
        validate_sample(sample)
        torch.manual_seed(self.seed)
        bb = self.backbone
        times = StageTimes()
        image_hw = (sample.height, sample.width)
        kv = StoredKeyValues(bb.unet, start_layer=self.start_layer)
        cond = bb.condition(sample.prompt)
        # 1. encode and DDIM-invert, recording the up blocks' self-attention keys/values per timestep
        with times.stage("inversion"), kv:
            latent = encode_image(bb, sample.image)
            inverted = ddim_invert(
                bb,
                latent,
                cond,
                bb.scheduler.config,
                self.n_inference_steps,
                self.inversion_step,
                step_callback=kv.on_step,
            )
        # 2. one-step warp of the region and hole filling (tensor ops)
        with times.stage("warp"):
            region = region_on_latent(sample.mask, tuple(inverted.shape[-2:]))
            handles_rc = points_on_latent(sample.handles, image_hw, bb.vae_scale_factor)
            targets_rc = points_on_latent(sample.targets, image_hw, bb.vae_scale_factor)
            warp = warp_latent(inverted, region, handles_rc, targets_rc)
            filled = fill_holes(warp.latent, warp.holes)
        # 3. denoise from the filled latent, attending to the recorded keys/values
        with times.stage("denoise"), torch.no_grad():
            kv.mode = "inject"
            with kv:
                denoised = ddim_denoise(
                    bb,
                    filled,
                    cond,
                    bb.scheduler.config,
                    self.n_inference_steps,
                    self.inversion_step,
                    step_callback=kv.on_step,
                )
            edited_float = decode_latents(bb, denoised)
        image = to_uint8(edited_float, image_hw)  # bilinear resize, x255 truncated (official)
        log.info(
            "%s: %d holes filled, %.2fs", sample.sample_id, int(warp.holes.sum()), sum(times.seconds.values())
        )
        return FastDragTrace(
            inverted=inverted,
            region=region,
            handles_rc=handles_rc,
            targets_rc=targets_rc,
            warp=warp,
            filled=filled,
            denoised=denoised,
            edited_float=edited_float,
            image=image,
            times=dict(times.seconds),
        )
