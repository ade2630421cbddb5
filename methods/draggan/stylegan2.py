"""StyleGAN2 generator (Karras et al. 2020) whose parameter names/shapes follow NVIDIA's stylegan2-ada-pytorch
`G_ema`, so official weights load; `synthesis` also returns every block's feature map (DragGAN, protocol §5).

Own implementation of the published architecture: mapping MLP with lr-multiplier, modulated/demodulated 3x3
convs with per-layer noise, ToRGB skips, [1,3,3,1] FIR up-sampling. Runs in float32 only (the fp16 blocks of
official checkpoints are computed in fp32; `num_fp16_res`/`conv_clamp` are kept for fidelity of the maths).
Matches NVIDIA's own generator on its pickles to max |diff| <= 2.8e-5 at 512 px (fp32, CPU; numbers and
recipe in tests/data/stylegan2_official/README.md).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

LRELU_SLOPE = 0.2  # StyleGAN2 leaky ReLU slope
LRELU_GAIN = math.sqrt(2.0)  # gain that keeps the activation variance (bias_act 'lrelu' def_gain)
RESAMPLE_FILTER = (1, 3, 3, 1)  # StyleGAN2 FIR kernel, made separable 2-D and normalised to sum 1
DEMOD_EPS = 1e-8  # epsilon in the demodulation rsqrt (official modulated_conv2d)


def setup_filter(taps: tuple[int, ...] = RESAMPLE_FILTER) -> Tensor:
    """2-D FIR filter: outer product of `taps`, normalised to sum 1. Returns (k, k) float32."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)  # (k, k)
    return f / f.sum()


def upfirdn2d(
    x: Tensor, f: Tensor, up: int = 1, pad: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = 1.0
) -> Tensor:
    """Zero-insertion up-sampling, padding (x0, x1, y0, y1) and depthwise FIR filtering (true convolution).

    Args:
        x: (B, C, H, W).
        f: (k, k) filter.
        up: integer up-sampling factor.
        pad: non-negative padding (left, right, top, bottom) applied after up-sampling.
        gain: overall gain multiplied into the filter.
    """
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)  # (B, C, H*up, W*up), zeros between samples
    x = F.pad(x, list(pad))
    k = (f * gain).to(x.dtype).flip([0, 1])  # convolution, not correlation
    ky, kx = k.sum(dim=1), k.sum(dim=0) / k.sum()  # separable factors if k == outer(ky, kx)
    if torch.allclose(torch.outer(ky, kx), k, atol=1e-7):
        x = F.conv2d(x, kx.reshape(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)  # rows: (C, 1, 1, k)
        return F.conv2d(x, ky.reshape(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)  # cols: (C, 1, k, 1)
    return F.conv2d(x, k[None, None].repeat(c, 1, 1, 1), groups=c)  # (C, 1, k, k) depthwise


def upsample2d(x: Tensor, f: Tensor, up: int = 2) -> Tensor:
    """FIR up-sampling by `up` (official `upfirdn2d.upsample2d` padding and gain up**2)."""
    k = f.shape[-1]
    p0, p1 = (k + up - 1) // 2, (k - up) // 2
    return upfirdn2d(x, f, up=up, pad=(p0, p1, p0, p1), gain=up * up)


def conv2d_up(x: Tensor, weight: Tensor, f: Tensor, up: int = 2) -> Tensor:
    """3x3 conv with 2x up-sampling: strided transposed conv then FIR filter (official conv2d_resample)."""
    kh, kw = weight.shape[-2:]
    k = f.shape[-1]
    pad = 1  # kernel_size // 2 for 3x3
    px0 = pad + (k + up - 1) // 2 - (kw - 1)
    px1 = pad + (k - up) // 2 - (kw - up)
    x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=up)  # (B, O, 2H+1, 2W+1)
    return upfirdn2d(x, f, pad=(px0, px1, px0, px1), gain=up * up)


def bias_act(
    x: Tensor, b: Tensor | None, act: str = "linear", gain: float | None = None, clamp: float | None = None
) -> Tensor:
    """Add bias over dim 1, apply 'linear' or 'lrelu', scale by gain (default: the act's gain), clamp."""
    if b is not None:
        x = x + b.reshape([1, -1] + [1] * (x.ndim - 2))
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
        gain = LRELU_GAIN if gain is None else gain
    elif act != "linear":
        raise ValueError(f"unknown activation {act!r}; expected 'linear' or 'lrelu'")
    gain = 1.0 if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def modulated_conv2d(
    x: Tensor,
    weight: Tensor,
    styles: Tensor,
    noise: Tensor | None = None,
    up: int = 1,
    resample_filter: Tensor | None = None,
    demodulate: bool = True,
) -> Tensor:
    """Modulated (and optionally demodulated) convolution, StyleGAN2 eq. 1-3, non-fused form.

    Args:
        x: (B, I, H, W) input.
        weight: (O, I, k, k).
        styles: (B, I) per-sample input-channel scales.
        noise: broadcastable to the output (B, 1, H', W'), added after demodulation.
        up: 1 or 2.
        resample_filter: (4, 4) FIR filter, needed when up > 1.
        demodulate: divide each output channel by the norm of its modulated weights.
    """
    batch = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    dcoefs = None
    if demodulate:
        w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)  # (B, O, I, k, k)
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + DEMOD_EPS).rsqrt()  # (B, O)
    x = x * styles.reshape(batch, -1, 1, 1)
    if up > 1:
        x = conv2d_up(x, weight, resample_filter, up=up)
    else:
        x = F.conv2d(x, weight, padding=kh // 2)
    if dcoefs is not None:
        x = x * dcoefs.reshape(batch, -1, 1, 1)
    if noise is not None:
        x = x + noise
    return x


def normalize_2nd_moment(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale each row of (B, D) to unit mean square (pixel norm of z)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(nn.Module):
    """Equalised-lr linear layer: params `weight` (out, in), `bias` (out,)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight * self.weight_gain
        b = None if self.bias is None else self.bias * self.bias_gain
        return bias_act(x.matmul(w.t()), b, act=self.activation)


class MappingNetwork(nn.Module):
    """z (+ c) -> w broadcast to `num_ws` layers; params `fc{i}.*`, optional `embed.*`, buffer `w_avg`."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int,
        num_layers: int = 8,
        embed_features: int | None = None,
        layer_features: int | None = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers = (
            z_dim,
            c_dim,
            w_dim,
            num_ws,
            num_layers,
        )
        embed_features = w_dim if embed_features is None else embed_features
        embed_features = 0 if c_dim == 0 else embed_features
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for i in range(num_layers):
            layer = FullyConnectedLayer(
                features[i], features[i + 1], activation=activation, lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{i}", layer)
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: Tensor,
        c: Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> Tensor:
        """(B, z_dim) -> (B, num_ws, w_dim)."""
        x = normalize_2nd_moment(z) if self.z_dim > 0 else None
        if self.c_dim > 0:
            y = normalize_2nd_moment(self.embed(c))
            x = y if x is None else torch.cat([x, y], dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)  # (B, num_ws, w_dim)
        if truncation_psi != 1:
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x = torch.cat([self.w_avg.lerp(x[:, :cut], truncation_psi), x[:, cut:]], dim=1)
        return x


def plane_shape(resolution: int, square: bool = True) -> tuple[int, int]:
    """A synthesis plane's (height, width): square, or StyleGAN-Human's full-body rectangle (width = height / 2;
    its `training/networks.py` with `square=False`)."""
    return (resolution, resolution) if square else (resolution, resolution // 2)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv + noise + bias + lrelu; params `affine.*`, `weight`, `noise_strength`, `bias`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        conv_clamp: float | None = None,
        square: bool = True,
    ) -> None:
        super().__init__()
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.activation, self.conv_clamp, self.square = activation, conv_clamp, square
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.register_buffer("resample_filter", setup_filter())
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(list(self.noise_shape)))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    @property
    def noise_shape(self) -> tuple[int, int]:
        """(height, width) of this layer's output and noise map: (r, r), or (r, r // 2) for a rectangle."""
        return plane_shape(self.resolution, self.square)

    def forward(self, x: Tensor, w: Tensor, noise_mode: str = "const", noise: Tensor | None = None) -> Tensor:
        """x (B, I, r/up, r/up), w (B, w_dim) -> (B, O, r, r) (width r // 2 for a rectangle). `noise` of
        `noise_shape` overrides `noise_mode`."""
        styles = self.affine(w)  # (B, I)
        n = None
        if self.use_noise:
            if noise is not None:
                n = noise * self.noise_strength
            elif noise_mode == "const":
                n = self.noise_const * self.noise_strength
            elif noise_mode == "random":
                n = torch.randn([x.shape[0], 1, *self.noise_shape], device=x.device) * self.noise_strength
            elif noise_mode != "none":
                raise ValueError(f"noise_mode must be const|random|none, got {noise_mode!r}")
        x = modulated_conv2d(
            x, self.weight, styles, noise=n, up=self.up, resample_filter=self.resample_filter
        )
        # Official SynthesisLayer: act_clamp = conv_clamp * gain with the *call's* gain (1 for G), not the
        # activation's sqrt(2): the clamp bounds the activated, gained output at +-conv_clamp.
        return bias_act(x, self.bias, act=self.activation, clamp=self.conv_clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to image channels, no demodulation; params `affine.*`, `weight`, `bias`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        kernel_size: int = 1,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w) * self.weight_gain  # (B, I)
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (const | conv0 up) -> conv1 -> torgb, image skip up-sampled by FIR."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        architecture: str = "skip",
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        square: bool = True,
        **layer_kwargs,
    ) -> None:
        super().__init__()
        if architecture != "skip":
            raise NotImplementedError(f"synthesis architecture {architecture!r}: only 'skip' (StyleGAN2 G)")
        self.in_channels, self.resolution, self.is_last, self.use_fp16 = (
            in_channels,
            resolution,
            is_last,
            use_fp16,
        )
        self.square = square
        self.register_buffer("resample_filter", setup_filter())
        self.num_conv, self.num_torgb = 0, 0
        layer_kwargs = {"conv_clamp": conv_clamp, "square": square, **layer_kwargs}
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, *plane_shape(resolution, square)]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, **layer_kwargs)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_torgb += 1

    def noise_layers(self) -> list[SynthesisLayer]:
        """The block's conv layers in execution order."""
        return [self.conv0, self.conv1] if self.in_channels else [self.conv1]

    def forward(
        self,
        x: Tensor | None,
        img: Tensor | None,
        ws: Tensor,
        noise_mode: str = "const",
        noises: list[Tensor | None] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """ws (B, num_conv + num_torgb, w_dim) -> (features (B, O, r, r), image (B, 3, r, r))."""
        w_iter = iter(ws.unbind(dim=1))
        layers = self.noise_layers()
        noises = [None] * len(layers) if noises is None else noises
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])  # (B, O, 4, 4)
        for layer, noise in zip(layers, noises, strict=True):
            x = layer(x, next(w_iter), noise_mode=noise_mode, noise=noise)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter))
        img = y if img is None else img + y
        return x, img


def pad_to_square(x: Tensor, value: float) -> Tensor:
    """(B, C, H, W) with W <= H -> (B, C, H, H), padded with `value` by (H - W) // 2 left and right (DragGAN's
    StyleGAN-Human `Generator.forward` with `padding=True`)."""
    pad = (x.shape[-2] - x.shape[-1]) // 2
    return F.pad(x, (pad, pad), "constant", value)


class SynthesisNetwork(nn.Module):
    """w+ (B, num_ws, w_dim) -> image and per-block features; blocks `b4`, `b8`, ..., `b{img_resolution}`.

    `square=False` is StyleGAN-Human's full-body rectangle (R x R/2). Its outputs are padded to R x R as
    DragGAN's renderer loads that generator (`padding=True`: the image with 1 = white, the features with 0,
    equally left and right), so every caller sees a square canvas.
    """

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        square: bool = True,
        **block_kwargs,
    ) -> None:
        super().__init__()
        self.square = square
        log2 = int(np.log2(img_resolution))
        if img_resolution != 2**log2 or img_resolution < 4:
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            in_ch = channels[res // 2] if res > 4 else 0
            is_last = res == img_resolution
            block = SynthesisBlock(
                in_ch,
                channels[res],
                w_dim,
                res,
                img_channels,
                is_last,
                use_fp16=res >= fp16_resolution,
                square=square,
                **block_kwargs,
            )
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f"b{res}", block)

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def noise_layers(self) -> list[SynthesisLayer]:
        """Every conv layer in execution order (one noise map each)."""
        return [layer for block in self.blocks() for layer in block.noise_layers()]

    def forward(
        self, ws: Tensor, noise_mode: str = "const", noises: list[Tensor] | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """Synthesise.

        Args:
            ws: (B, num_ws, w_dim) W+ latents.
            noise_mode: 'const' (the stored noise buffers), 'random' or 'none'.
            noises: optional per-layer noise maps (r, r) in `noise_layers()` order; override noise_mode.

        Returns:
            image (B, C, R, R) roughly in [-1, 1], and the list of block outputs (B, C_b, r_b, r_b), b4 first
            (a rectangle's padded to square, see the class docstring).
        """
        x = img = None
        feats, w_idx, n_idx = [], 0, 0
        for block in self.blocks():
            cur = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)  # (B, conv+torgb, w_dim)
            cur_noises = None if noises is None else noises[n_idx : n_idx + block.num_conv]
            x, img = block(x, img, cur, noise_mode=noise_mode, noises=cur_noises)
            feats.append(x)
            w_idx += block.num_conv
            n_idx += block.num_conv
        if not self.square:
            img = pad_to_square(img, value=1.0)
            feats = [pad_to_square(f, value=0.0) for f in feats]
        return img, feats


class Generator(nn.Module):
    """StyleGAN2 generator `G_ema`: `mapping` and `synthesis` sub-networks (official names)."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict | None = None,
        synthesis_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        self.init_kwargs = {
            "z_dim": z_dim,
            "c_dim": c_dim,
            "w_dim": w_dim,
            "img_resolution": img_resolution,
            "img_channels": img_channels,
            "mapping_kwargs": dict(mapping_kwargs or {}),
            "synthesis_kwargs": dict(synthesis_kwargs or {}),
        }
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(
            w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **(synthesis_kwargs or {})
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **(mapping_kwargs or {})
        )

    def forward(
        self, z: Tensor, c: Tensor | None = None, truncation_psi: float = 1.0, noise_mode: str = "const"
    ) -> tuple[Tensor, list[Tensor]]:
        """z (B, z_dim) -> (image (B, C, R, R), block features)."""
        return self.synthesis(self.mapping(z, c, truncation_psi=truncation_psi), noise_mode=noise_mode)


#: Synthesis kwargs the official `SynthesisNetwork` accepts that only matter for training/speed:
#: `fused_modconv_default` (stylegan3 repo: True | 'inference_only') picks grouped vs. batched convs, the
#: same maths; channels-last formats change no output either.
IGNORED_SYNTHESIS_KWARGS = ("fp16_channels_last", "channels_last", "fused_modconv_default")


GENERATOR_KWARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
#: `use_noise` and `activation` reach every SynthesisLayer (official `**layer_kwargs`); NVIDIA's TF->PyTorch
#: converter (legacy.py `convert_tf_generator`) writes them, and `resample_filter`, explicitly.
SYNTHESIS_KWARGS = (
    "channel_base", "channel_max", "num_fp16_res", "conv_clamp", "architecture", "use_noise", "activation",
    "square",
)  # fmt: skip
MAPPING_KWARGS = (
    "num_layers",
    "embed_features",
    "layer_features",
    "activation",
    "lr_multiplier",
    "w_avg_beta",
)

#: Class defaults of the settings a pickle's init kwargs may leave out, per official code base:
#: stylegan2-ada-pytorch training/networks.py (SynthesisNetwork num_fp16_res=0, SynthesisBlock
#: conv_clamp=None) and the stylegan3 repo's training/networks_stylegan2.py (num_fp16_res=4, conv_clamp=256).
ADA_SYNTHESIS_DEFAULTS = {"num_fp16_res": 0, "conv_clamp": None}
STYLEGAN3_REPO_SYNTHESIS_DEFAULTS = {"num_fp16_res": 4, "conv_clamp": 256}


def split_init_kwargs(init_kwargs: dict) -> tuple[dict, dict, dict]:
    """Official `G_ema.init_kwargs` -> (generator, mapping, synthesis) kwargs with the code base's defaults.

    Two layouts exist: stylegan2-ada-pytorch (`synthesis_kwargs={...}`) and the stylegan3 repo's
    `networks_stylegan2` (synthesis kwargs flattened into the Generator's, as in DragGAN's checkpoints); the
    settings they leave out get that code base's class defaults (`*_SYNTHESIS_DEFAULTS`), speed-only kwargs
    are dropped.

    Raises:
        ValueError: on kwargs this implementation does not understand.
    """
    kw = dict(init_kwargs)
    mapping = dict(kw.pop("mapping_kwargs", {}) or {})
    nested = "synthesis_kwargs" in kw
    syn = dict(kw.pop("synthesis_kwargs", {}) or {})
    known = SYNTHESIS_KWARGS + IGNORED_SYNTHESIS_KWARGS + ("resample_filter",)
    syn.update({k: kw.pop(k) for k in list(kw) if k in known})
    taps = syn.pop("resample_filter", RESAMPLE_FILTER)
    if [float(t) for t in taps] != [float(t) for t in RESAMPLE_FILTER]:
        raise ValueError(f"resample_filter {list(taps)} is not supported: only {list(RESAMPLE_FILTER)}")
    syn = {k: v for k, v in syn.items() if k not in IGNORED_SYNTHESIS_KWARGS}
    unknown = sorted(set(kw) - set(GENERATOR_KWARGS)) + sorted(set(syn) - set(SYNTHESIS_KWARGS))
    unknown += [f"mapping_kwargs.{k}" for k in sorted(set(mapping) - set(MAPPING_KWARGS))]
    if unknown:
        raise ValueError(
            f"unsupported Generator init kwargs {unknown}; supported: {list(GENERATOR_KWARGS)} + synthesis "
            f"{list(known)} + mapping_kwargs {list(MAPPING_KWARGS)}"
        )
    defaults = ADA_SYNTHESIS_DEFAULTS if nested else STYLEGAN3_REPO_SYNTHESIS_DEFAULTS
    return kw, mapping, {**defaults, **syn}


def build_generator(init_kwargs: dict) -> Generator:
    """Build a Generator from official `G_ema.init_kwargs` (either layout, see `split_init_kwargs`).

    Raises:
        ValueError: on kwargs this implementation does not understand.
    """
    kw, mapping, syn = split_init_kwargs(init_kwargs)
    return Generator(mapping_kwargs=mapping, synthesis_kwargs=syn, **kw)


def build_tiny_generator(
    resolution: int = 64,
    z_dim: int = 32,
    w_dim: int = 32,
    channel_base: int = 512,
    channel_max: int = 32,
    mapping_layers: int = 2,
    seed: int = 0,
    square: bool = True,
) -> Generator:
    """A randomly initialised small StyleGAN2 (same code and names as the real one), for offline runs/tests.

    Noise strengths stay at their official initial value 0 (fixed noise would not move with the content).
    `square=False`: StyleGAN-Human's R x R/2 layout (`SynthesisNetwork`).
    """
    gen = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    try:
        g = Generator(
            z_dim=z_dim,
            c_dim=0,
            w_dim=w_dim,
            img_resolution=resolution,
            img_channels=3,
            mapping_kwargs={"num_layers": mapping_layers},
            synthesis_kwargs={"channel_base": channel_base, "channel_max": channel_max}
            | ({} if square else {"square": False}),
        )
    finally:
        torch.random.set_rng_state(torch_state)
    return g.eval().requires_grad_(False)
