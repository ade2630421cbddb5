"""DragDiffusion's numeric precision per stage: the named modes of `method.precision` (issue 12, point 2).

`official_fp16` reproduces the casting of the official DragBench scripts (Yujun-Shi/DragDiffusion
`drag_bench_evaluation/run_lora_training.py` -> `utils/lora_utils.py`, `run_drag_diffusion.py` ->
`utils/drag_utils.py`), which produced the paper's DragBench numbers; `fp32` computes everything in float32.
methods/dragdiffusion/README.md ("Precision") lists, stage by stage, where each mode differs from that code.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch

from dragbench.backbone import Backbone

log = logging.getLogger(__name__)

PRECISION_CHOICES = ("auto", "official_fp16", "fp32")
STAGES = ("lora", "inversion", "drag", "denoise")


@dataclass(frozen=True)
class StagePrecision:
    """How one stage computes.

    Attributes:
        weights: dtype of the frozen UNet / VAE / text-encoder weights the stage runs on. Trainable tensors
            (LoRA parameters, the dragged latent) are always float32.
        autocast: dtype of the `torch.autocast` region around forward pass and loss, or None (off). fp16
            autocast comes with a `GradScaler` (dynamic loss scaling, torch's defaults, as the official code).
    """

    weights: torch.dtype = torch.float32
    autocast: torch.dtype | None = None

    @property
    def grad_scaling(self) -> bool:
        """Loss scaling is on exactly when fp16 autocast is (accelerate's fp16 and the drag loop do so)."""
        return self.autocast == torch.float16

    def autocast_context(self, device_type: str) -> contextlib.AbstractContextManager:
        """`torch.autocast(device_type, dtype)` when on, else a no-op context."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device_type, dtype=self.autocast)

    def grad_scaler(self, device_type: str) -> torch.amp.GradScaler:
        """A GradScaler (init scale 2**16, growth 2 every 2000 steps, backoff 0.5), disabled without fp16."""
        return torch.amp.GradScaler(device_type, enabled=self.grad_scaling)

    def describe(self) -> str:
        """E.g. "weights float16, autocast float16 + GradScaler" (recorded in EditResult.info)."""
        text = f"weights {_name(self.weights)}"
        if self.autocast is not None:
            text += f", autocast {_name(self.autocast)}" + (" + GradScaler" if self.grad_scaling else "")
        return text


FP32 = StagePrecision()


@dataclass(frozen=True)
class PrecisionPlan:
    """The resolved precision mode: one `StagePrecision` per stage of an edit.

    Attributes:
        name: the resolved mode ("official_fp16" | "fp32"; never "auto").
        lora, inversion, drag, denoise: how each stage computes. Inversion includes the VAE encoding, denoise
            the VAE decoding.
    """

    name: str
    lora: StagePrecision
    inversion: StagePrecision
    drag: StagePrecision
    denoise: StagePrecision

    def info(self) -> dict[str, str]:
        """`{"precision": name, "precision/<stage>": description}` for EditResult.info / results rows."""
        return {"precision": self.name, **{f"precision/{s}": getattr(self, s).describe() for s in STAGES}}


PLANS = {
    # The official DragBench scripts. LoRA: accelerate fp16 mixed precision on UNet/VAE/text encoder cast to
    # fp16, LoRA layers created after the cast (fp32). Drag: the pipeline is loaded in fp32 (no torch_dtype)
    # and the loop runs under torch.autocast(cuda, fp16) with torch.cuda.amp.GradScaler. Inversion and the
    # final denoise run that fp32 pipeline without autocast.
    "official_fp16": PrecisionPlan(
        name="official_fp16",
        lora=StagePrecision(weights=torch.float16, autocast=torch.float16),
        inversion=FP32,
        drag=StagePrecision(weights=torch.float32, autocast=torch.float16),
        denoise=FP32,
    ),
    "fp32": PrecisionPlan(name="fp32", lora=FP32, inversion=FP32, drag=FP32, denoise=FP32),
}


def resolve_precision(precision: str, device: torch.device) -> PrecisionPlan:
    """The plan of a `method.precision` value; "auto" = official_fp16 on CUDA, fp32 on any other device.

    CPU gets fp32 under auto because the official code's autocast and GradScaler switch themselves off there
    (and accelerate refuses fp16 on CPU). `official_fp16` on CPU is allowed and runs torch's CPU fp16 autocast
    with the same casting as on CUDA (slow; meant for tests).

    Raises:
        ValueError: unknown mode (the message lists the choices and the closest one).
    """
    if precision not in PRECISION_CHOICES:
        close = difflib.get_close_matches(str(precision), PRECISION_CHOICES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"method.precision={precision!r} is not a precision mode{hint}; choose one of {PRECISION_CHOICES}"
        )
    if precision == "auto":
        precision = "official_fp16" if torch.device(device).type == "cuda" else "fp32"
    return PLANS[precision]


def require_float32_weights(backbone: Backbone, method: str, precision_knob: bool = True) -> None:
    """Refuse, in one line, a backbone loaded in half precision: the methods keep float32 weights and cast
    per stage themselves (`precision_knob`: the method has `method.precision`; else it runs in float32).

    Raises:
        ValueError: backbone.dtype is not float32.
    """
    if backbone.dtype == torch.float32:
        return
    why = "needs float32 weights and casts per stage itself" if precision_knob else "runs in float32 here"
    fix = f" and choose method.precision from {PRECISION_CHOICES}" if precision_knob else ""
    raise ValueError(f"model.dtype={_name(backbone.dtype)}: {method} {why}; set model.dtype=float32{fix}")


@contextlib.contextmanager
def weights_in(backbone: Backbone, dtype: torch.dtype) -> Iterator[Backbone]:
    """The backbone with its UNet, VAE and text encoder in `dtype`, for the duration of the block.

    Yields the backbone itself when it is already in `dtype`; otherwise a temporary copy whose weights are
    cast (tokenizer, scheduler and device shared), freed on exit. The shared backbone is never cast in place:
    fp32 -> fp16 -> fp32 would round its weights for every later stage and job.
    """
    if backbone.dtype == dtype:
        yield backbone
        return
    log.info("precision: a %s copy of the backbone for this stage", _name(dtype))
    copied = replace(
        backbone,
        unet=cast_copy(backbone.unet, dtype),
        vae=cast_copy(backbone.vae, dtype),
        text_encoder=cast_copy(backbone.text_encoder, dtype),
        dtype=dtype,
    )
    try:
        yield copied
    finally:
        del copied
        if backbone.device.type == "cuda":
            torch.cuda.empty_cache()


def cast_copy(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A deep copy of `module` whose floating-point parameters and buffers are cast to `dtype`.

    Each tensor is cast straight into the copy (peak memory = original + cast copy, never a second full
    copy in the original dtype). Parameters keep their `requires_grad`; integer buffers are shared.
    """
    memo: dict[int, object] = {}
    for p in module.parameters():
        cast = p.detach().to(dtype, copy=True) if p.is_floating_point() else p.detach()
        memo[id(p)] = torch.nn.Parameter(cast, requires_grad=p.requires_grad)
    for b in module.buffers():
        memo[id(b)] = b.to(dtype, copy=True) if b.is_floating_point() else b
    return copy.deepcopy(module, memo)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
