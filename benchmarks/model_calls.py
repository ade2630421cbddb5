"""Count and time the model calls of any computation (benchmarks; DESIGN.md "Reuse").

`ModelCalls` installs forward pre/post hooks and autograd hooks on named modules (UNet, VAE encoder and
decoder, text encoder): no monkey-patching; everything is removed on exit.

"Forward-equivalents" (the unit of `cost`): one forward call on a batch of B counts B; a backward pass
through a call counts 2 B (the usual rule of thumb: backward ≈ twice the forward's FLOPs). A forward
stopped early by an exception (DIFT stops after the wanted up block) counts as a whole forward.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.autograd import Variable

log = logging.getLogger(__name__)

BACKWARD_COST = 2  # forward-equivalents per batch element of a backward pass (rule of thumb)


def backbone_modules(backbone: Any, prefix: str = "") -> dict[str, nn.Module]:
    """The countable modules of an SD backbone: {prefix+"unet", "vae_encoder", "vae_decoder", "text_encoder"}.

    Args:
        backbone: anything with `unet`, `vae` (with `.encoder`/`.decoder`) and `text_encoder` attributes.
        prefix: prepended to every name (e.g. "eval/" for the metric's backbone).
    """
    return {
        f"{prefix}unet": backbone.unet,
        f"{prefix}vae_encoder": backbone.vae.encoder,
        f"{prefix}vae_decoder": backbone.vae.decoder,
        f"{prefix}text_encoder": backbone.text_encoder,
    }


def _batch_size(args: tuple, kwargs: dict) -> int:
    """Leading dimension of the first tensor argument (1 when there is none)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return 1


def _first_tensor(output: Any) -> torch.Tensor | None:
    """The first tensor of a module output (tensor, tuple/list, or diffusers/transformers ModelOutput)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for value in output:
            if isinstance(value, torch.Tensor):
                return value
    return None


class ModelCalls:
    """Context manager counting and timing forward calls and backward passes of named modules.

    Attributes (per module name):
        calls: forward calls; samples: batch elements forwarded.
        backward_calls: backward passes through a call; backward_samples: their batch elements.
        forward_seconds / backward_seconds: wall time inside forwards / from the gradient reaching the
            call's output until the end of that backward pass (the UNet is the last stage of every backward
            in this project: its inputs are leaves; two calls in one backward would overlap).

    Args:
        modules: {name: module}; the modules must not be nested in one another (times would add up twice).
        sync_cuda: call `torch.cuda.synchronize()` around each timed region (honest GPU times, slower).

    Example:
        >>> with ModelCalls(backbone_modules(bb)) as mc:
        ...     method.edit(sample)
        >>> mc.cost()  # forward-equivalents over all modules
    """

    def __init__(self, modules: dict[str, nn.Module], sync_cuda: bool = False) -> None:
        self.modules = dict(modules)
        self.sync_cuda = sync_cuda
        self.calls: Counter[str] = Counter()
        self.samples: Counter[str] = Counter()
        self.backward_calls: Counter[str] = Counter()
        self.backward_samples: Counter[str] = Counter()
        self.forward_seconds: Counter[str] = Counter()
        self.backward_seconds: Counter[str] = Counter()
        self._handles: list[Any] = []
        self._stack: dict[str, list[tuple[int, float]]] = {}  # per name: (batch, start) of open forwards

    # ------------------------------------------------------------------ results
    def cost(self, names: Iterable[str] | None = None) -> int:
        """Forward-equivalents: samples + BACKWARD_COST x backward samples, over `names` (default: all)."""
        names = list(self.modules) if names is None else list(names)
        return sum(self.samples[n] + BACKWARD_COST * self.backward_samples[n] for n in names)

    def seconds(self) -> float:
        """Total wall time inside the counted modules (forward + backward)."""
        return float(sum(self.forward_seconds.values()) + sum(self.backward_seconds.values()))

    def summary(self) -> dict[str, dict[str, float]]:
        """{name: {calls, samples, backward_calls, backward_samples, cost, forward_s, backward_s}}."""
        return {
            n: {
                "calls": self.calls[n],
                "samples": self.samples[n],
                "backward_calls": self.backward_calls[n],
                "backward_samples": self.backward_samples[n],
                "cost": self.cost([n]),
                "forward_s": self.forward_seconds[n],
                "backward_s": self.backward_seconds[n],
            }
            for n in self.modules
        }

    # ------------------------------------------------------------------ hooks
    def _now(self) -> float:
        if self.sync_cuda and torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def _pre_hook(self, name: str):
        def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            batch = _batch_size(args, kwargs)
            self.calls[name] += 1
            self.samples[name] += batch
            self._stack.setdefault(name, []).append((batch, self._now()))

        return hook

    def _post_hook(self, name: str):
        def hook(_module: nn.Module, _args: tuple, _kwargs: dict, output: Any) -> None:
            batch, start = self._stack[name].pop()
            self.forward_seconds[name] += self._now() - start
            out = _first_tensor(output)
            if torch.is_grad_enabled() and out is not None and out.requires_grad:
                out.register_hook(self._backward_start(name, batch))  # dies with the output tensor

        return hook

    def _backward_start(self, name: str, batch: int):
        def hook(_grad: torch.Tensor) -> None:
            self.backward_calls[name] += 1
            self.backward_samples[name] += batch
            start = self._now()

            def ended() -> None:  # the engine runs queued callbacks when this backward pass is done
                self.backward_seconds[name] += self._now() - start

            Variable._execution_engine.queue_callback(ended)

        return hook

    # ------------------------------------------------------------------ context
    def __enter__(self) -> ModelCalls:
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_pre_hook(self._pre_hook(name), with_kwargs=True))
            self._handles.append(
                module.register_forward_hook(self._post_hook(name), with_kwargs=True, always_call=True)
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
