"""benchmarks.model_calls: known counts of forward calls, batch elements, backward passes; hooks removed."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from benchmarks.model_calls import BACKWARD_COST, ModelCalls, backbone_modules


@dataclass
class _Out:
    sample: torch.Tensor


class _DictOut(dict):
    """Like a diffusers ModelOutput: a dict whose first value is the tensor."""


class _Net(nn.Module):
    def __init__(self, trainable: bool = False) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.lin.requires_grad_(trainable)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> _DictOut:
        return _DictOut(sample=self.lin(x) * scale)


class _Stop(Exception):
    pass


class _Stopping(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise _Stop


def test_counts_forwards_batch_elements_and_backwards():
    unet, text = _Net(), _Net()
    with ModelCalls({"unet": unet, "text_encoder": text}) as mc:
        latent = torch.zeros(2, 3, requires_grad=True)  # batch 2, optimised (as in the drag loop)
        with torch.no_grad():
            unet(torch.zeros(4, 3))  # batch 4, no grad
        text(torch.zeros(1, 3))
        for _ in range(3):  # three optimisation iterations: forward + backward each
            unet(latent)["sample"].sum().backward()
        unet(latent)  # a last forward without backward (the loop stopped)
    assert mc.calls == {"unet": 5, "text_encoder": 1}
    assert mc.samples == {"unet": 4 + 3 * 2 + 2, "text_encoder": 1}
    assert mc.backward_calls["unet"] == 3 and mc.backward_samples["unet"] == 6
    assert mc.cost(["unet"]) == 12 + BACKWARD_COST * 6 == 24
    assert mc.cost() == 25
    assert mc.summary()["unet"]["cost"] == 24
    # every hook gone: nothing is counted after exit
    unet(latent)["sample"].sum().backward()
    assert mc.calls["unet"] == 5 and mc.backward_calls["unet"] == 3
    assert not unet._forward_hooks and not unet._forward_pre_hooks


def test_backward_through_trainable_parameters_only():
    """LoRA training: the inputs need no grad, the module's parameters do."""
    net = _Net(trainable=True)
    with ModelCalls({"unet": net}) as mc:
        for _ in range(4):
            net(torch.randn(3, 3))["sample"].pow(2).mean().backward()
    assert (mc.calls["unet"], mc.samples["unet"], mc.backward_calls["unet"]) == (4, 12, 4)
    assert mc.backward_seconds["unet"] > 0.0  # the end-of-backward hook fired for every pass
    for p in net.parameters():  # one-shot autograd hooks were removed once their backward ended
        assert not getattr(p, "_backward_hooks", None)


def test_interrupted_forward_counts_once():
    """DIFT stops the UNet with an exception after the wanted block: still one (whole) call."""
    net = _Stopping()
    with ModelCalls({"unet": net}) as mc:
        with pytest.raises(_Stop):
            net(torch.zeros(8, 1))
    assert mc.calls["unet"] == 1 and mc.samples["unet"] == 8


def test_tiny_backbone_vae_and_text_encoder(tiny_backbone):
    bb = tiny_backbone
    with ModelCalls(backbone_modules(bb)) as mc, torch.no_grad():
        bb.encode_prompt(["a", "b"])
        latents = bb.vae.encode(torch.zeros(1, 3, 32, 32)).latent_dist.mean
        bb.vae.decode(latents.expand(3, -1, -1, -1))
    assert mc.calls == {"text_encoder": 1, "vae_encoder": 1, "vae_decoder": 1}
    assert mc.samples == {"text_encoder": 2, "vae_encoder": 1, "vae_decoder": 3}
