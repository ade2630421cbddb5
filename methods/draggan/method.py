"""The DragGAN baseline on DragBench (protocol §5): route to a StyleGAN2 of the ensemble (CLIP or category, §12),
map the sample into its square domain, GAN-invert, run the DragGAN loop (W+ motion supervision +
nearest-neighbour tracking), composite back.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dragbench.backbone import resolve_device
from dragbench.progress import track
from dragbench.sample import DragSample, rc_to_xy, xy_to_rc
from dragbench.weights import STYLEGAN2_URLS, WeightFile, downloads_allowed, url_file_requirement
from methods.base import EditResult, required_info, reset_peak_memory
from methods.draggan import motion
from methods.draggan.canvas import (
    CANVAS_MODES,
    image_to_square,
    mask_to_square,
    paste_square,
    plan_square,
    regenerated_box,
)
from methods.draggan.checkpoint import load_generator
from methods.draggan.clip_router import RANDOM_CLIP, ClipRouter, RouteChoice, clip_requirements
from methods.draggan.projector import (
    LPIPS_TRUNK_FILES,
    LPIPS_TRUNK_URLS,
    ReconstructionLoss,
    pivotal_tuning,
    project,
)
from methods.draggan.routing import check_routing, parse_domains, route_by_category
from methods.draggan.stylegan2 import Generator, build_tiny_generator

logger = logging.getLogger(__name__)


@dataclass
class DragOutcome:
    """What the drag loop returns (square-domain quantities)."""

    image: Tensor  # (1, 3, R, R) in [-1, 1]
    handles_rc: Tensor  # (N, 2) long, tracked handles
    iterations: int  # optimiser steps taken
    reached: bool


def to_tensor_image(image: np.ndarray, device: torch.device) -> Tensor:
    """uint8 (H, W, 3) -> float (1, 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.array(image, copy=True)).to(device=device, dtype=torch.float32)
    return x.permute(2, 0, 1)[None] / 127.5 - 1  # (1, 3, H, W)


def to_uint8_image(image: Tensor) -> np.ndarray:
    """(1, 3, H, W) in [-1, 1] -> uint8 (H, W, 3) (official rounding: x * 127.5 + 128, clamped)."""
    x = (image[0].detach() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return x.permute(1, 2, 0).cpu().numpy()  # (H, W, 3)


class DragGAN:
    """DragGAN (Pan et al. 2023) as a `DragMethod` for DragBench.

    Args:
        domains: the ensemble, name -> {checkpoint, description, resolution[, seed]} (routing.Domain);
            checkpoint is a path (.pkl NVIDIA, .safetensors, .pt) or "random" for a tiny random generator
            built from `tiny_generator` at the domain's resolution and seed (labelled weights=random).
        routing: "clip" (each image to the domain whose description CLIP finds most similar) or "category"
            (`category_routes`).
        category_routes: routing "category" only: category -> domain name or None (unsupported); key "*"
            for other categories.
        clip_checkpoint: routing "clip" only: transformers CLIP checkpoint (hub id or folder), or "random"
            for a tiny random CLIP.
        tiny_generator: kwargs of `build_tiny_generator` (z_dim, w_dim, channel_base, channel_max,
            mapping_layers, seed; resolution and seed come from the domain); used only by "random" domains.
        canvas: "auto" | "crop" | "pad": how a non-square sample enters the square domain (canvas.py).
        feature_block: 1-based synthesis block whose output is the feature map (6 in DragGAN).
        n_optimized_layers: how many leading W+ latents are optimised (6); the rest stay at w0.
        lr: Adam learning rate on W+ (2e-3).
        r1, r2: motion-supervision disc radius and tracking window half-width at 512 px (3, 12).
        lam: weight of the mask (fixed-region) feature term (20).
        max_iters: cap on optimiser steps.
        inversion_space: "w" or "w+".
        inversion_steps, inversion_lr: projector steps and peak lr.
        inversion_loss: "lpips" (LPIPS + MSE; needs the torchvision trunk on disk) or "mse".
        lpips_net: "alex" or "vgg".
        optimize_noise: optimise noise maps during projection.
        noise_regularization: weight of the noise autocorrelation penalty.
        w_avg_samples: z samples for the projector's start point.
        pti_steps, pti_lr: pivotal tuning of a generator copy after projection (0 = off).
        device: "auto", "cpu", "cuda", ...
        seed: set before every sample.
    """

    def __init__(
        self,
        domains: dict[str, dict],
        routing: str,
        category_routes: dict[str, str | None],
        clip_checkpoint: str,
        tiny_generator: dict,
        canvas: str,
        feature_block: int,
        n_optimized_layers: int,
        lr: float,
        r1: float,
        r2: float,
        lam: float,
        max_iters: int,
        inversion_space: str,
        inversion_steps: int,
        inversion_lr: float,
        inversion_loss: str,
        lpips_net: str,
        optimize_noise: bool,
        noise_regularization: float,
        w_avg_samples: int,
        pti_steps: int,
        pti_lr: float,
        device: str,
        seed: int,
    ) -> None:
        if canvas not in CANVAS_MODES:
            raise ValueError(f"method.canvas must be one of {CANVAS_MODES}, got {canvas!r}")
        self.domains = parse_domains(domains)
        check_routing(routing, dict(category_routes), self.domains)
        self.routing, self.category_routes, self.clip_checkpoint = routing, dict(category_routes), clip_checkpoint
        self.tiny_generator = dict(tiny_generator)
        self.canvas, self.feature_block, self.n_optimized_layers = canvas, feature_block, n_optimized_layers
        self.lr, self.r1, self.r2, self.lam, self.max_iters = lr, r1, r2, lam, max_iters
        self.inversion_space, self.inversion_steps, self.inversion_lr = (
            inversion_space,
            inversion_steps,
            inversion_lr,
        )
        self.optimize_noise, self.noise_regularization = optimize_noise, noise_regularization
        self.w_avg_samples, self.pti_steps, self.pti_lr = w_avg_samples, pti_steps, pti_lr
        self.device, self.seed = resolve_device(device), seed
        self.loss = ReconstructionLoss(inversion_loss, lpips_net).to(self.device)
        self._generators: dict[str, tuple[Generator, str]] = {}
        self._router: ClipRouter | None = None  # built on first use: text embeddings once per instance

    @staticmethod
    def weight_requirements(
        domains: dict[str, dict],
        routing: str,
        category_routes: dict[str, str | None],
        clip_checkpoint: str,
        inversion_loss: str,
        lpips_net: str,
        dataset_categories: list[str] | None = None,
    ) -> list[WeightFile]:
        """Files this configuration reads, without loading them.

        Routing "clip": every domain's checkpoint that is not "random" (any image may go to any domain) and
        the CLIP checkpoint's files (hub files download on first use unless HF_HUB_OFFLINE). Routing
        "category": the checkpoints the routes name (only the routes of `dataset_categories` when the job's
        dataset names them). StyleGAN2 checkpoints are never downloaded by the harness. Plus the torchvision
        LPIPS trunk when `inversion_loss="lpips"` (downloaded on first use unless HF_HUB_OFFLINE).
        """
        ensemble = parse_domains(domains)
        if routing == "clip":
            used = {name: "any image CLIP routes there" for name in ensemble}
        else:
            cats = list(category_routes) if dataset_categories is None else dataset_categories
            used = {}
            for category in cats:
                name = route_by_category(category, category_routes)
                if name is not None:
                    used[name] = ", ".join(sorted(c for c, n in category_routes.items() if n == name))
        rows = []
        for name in sorted(n for n in used if n in ensemble and not ensemble[n].is_random):
            path = Path(ensemble[name].checkpoint)
            url = STYLEGAN2_URLS.get(path.name, "")
            how = f"put the StyleGAN2 checkpoint at {path} (or set {{knob}})"
            if "drive.google.com" in url:  # no direct link: DragGAN's README points to Google Drive
                how = f"download {url} (DragGAN README) to {path}, or set {{knob}}"
            elif url:
                how = f"`wget -P {path.parent} {url}` (DragGAN's download_model.sh) or set {{knob}}"
            if routing == "clip":
                how += f"; or drop method.domains.{name} from the ensemble"
            else:
                how += f"; or leave {used[name]} out (dataset.categories, or method.category_routes.<cat>=null)"
            what = f"StyleGAN2 {name!r} (for {used[name]})"
            rows.append(url_file_requirement(what, path, url, False, how, f"domains.{name}.checkpoint"))
        if routing == "clip":
            rows += clip_requirements(clip_checkpoint)
        if inversion_loss == "lpips" and lpips_net in LPIPS_TRUNK_FILES:
            path = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_TRUNK_FILES[lpips_net]
            url, auto = LPIPS_TRUNK_URLS[lpips_net], downloads_allowed()
            how = f"`wget -P {path.parent} {url}` (or {{knob}}=mse)"
            what = f"LPIPS({lpips_net}) trunk (GAN inversion)"
            rows.append(url_file_requirement(what, path, url, auto, how, "inversion_loss"))
        return rows

    @property
    def weights(self) -> str:
        """Run-level weights label: "random" if any domain is a tiny random generator or CLIP is random."""
        random_clip = self.routing == "clip" and self.clip_checkpoint == RANDOM_CLIP
        return "random" if random_clip or any(d.is_random for d in self.domains.values()) else "real"

    def generator(self, name: str) -> tuple[Generator, str]:
        """The (memoised) generator of domain `name` and its weights label ("real" | "random")."""
        if name not in self._generators:
            domain = self.domains[name]
            if domain.is_random:
                seed = self.tiny_generator.get("seed") if domain.seed is None else domain.seed
                shape = {"resolution": domain.resolution, "seed": seed, "square": domain.square}
                g, label = build_tiny_generator(**{**self.tiny_generator, **shape}), "random"
            else:
                g, label = load_generator(domain.checkpoint).generator, "real"
            if g.img_resolution != domain.resolution:
                raise ValueError(
                    f"method.domains.{name}: {domain.checkpoint} is a {g.img_resolution}px generator but the "
                    f"domain says resolution {domain.resolution}; fix method.domains.{name}.resolution"
                )
            n_blocks = len(g.synthesis.block_resolutions)
            if not 1 <= self.feature_block <= n_blocks:
                raise ValueError(
                    f"method.feature_block={self.feature_block} but generator {name!r} has "
                    f"{n_blocks} synthesis blocks; choose 1..{n_blocks}"
                )
            if not 1 <= self.n_optimized_layers <= g.num_ws:
                raise ValueError(f"method.n_optimized_layers={self.n_optimized_layers} not in 1..{g.num_ws}")
            self._generators[name] = (g.to(self.device).eval().requires_grad_(False), label)
        return self._generators[name]

    def route(self, sample: DragSample) -> tuple[str | None, RouteChoice | None]:
        """The domain for `sample` (None: unsupported) and, with CLIP routing, the similarities."""
        if self.routing == "category":
            return route_by_category(sample.category, self.category_routes), None
        if self._router is None:
            descriptions = {n: d.description for n, d in self.domains.items()}
            self._router = ClipRouter.from_checkpoint(self.clip_checkpoint, descriptions, self.device)
        choice = self._router(sample.image)
        return choice.domain, choice

    def features(self, g: Generator, ws: Tensor, noises: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Synthesise: (image (1, 3, R, R), features of `feature_block` bilinearly resized to (R, R))."""
        img, feats = g.synthesis(ws, noises=noises)
        f = feats[self.feature_block - 1]
        f = F.interpolate(f, size=img.shape[-2:], mode="bilinear", align_corners=False)  # (1, C, R, R)
        return img, f

    def drag(
        self,
        g: Generator,
        ws0: Tensor,
        noises: list[Tensor],
        handles_rc: Tensor,
        targets_rc: Tensor,
        fixed: Tensor,
    ) -> DragOutcome:
        """The DragGAN loop: each iteration tracks the handles on the current features, stops if all arrived,
        else takes one Adam step on the first `n_optimized_layers` W+ latents.

        Args:
            g: generator; ws0: (1, num_ws, w_dim) inverted latent; noises: per-layer noise maps.
            handles_rc, targets_rc: (N, 2) (row, col) in generator pixels.
            fixed: (R, R) float, 1 outside the editable region.
        """
        res = g.img_resolution
        r1, r2 = motion.scaled_radius(self.r1, res), motion.scaled_radius(self.r2, res)
        stop = motion.stop_distance(res)
        k = self.n_optimized_layers
        w_opt = ws0[:, :k].clone().requires_grad_(True)  # (1, k, w_dim)
        opt = torch.optim.Adam([w_opt], lr=self.lr)
        with torch.no_grad():
            _, feats0 = self.features(g, ws0, noises)
        handles = handles_rc.round().long()
        ref = feats0[0, :, handles[:, 0], handles[:, 1]].t().clone()  # (N, C)
        iterations, reached = 0, False
        for _ in track(range(self.max_iters + 1), "drag iteration"):  # the last pass only tracks and stops
            ws = torch.cat([w_opt, ws0[:, k:]], dim=1)  # (1, num_ws, w_dim)
            img, feats = self.features(g, ws, noises)
            with torch.no_grad():
                handles = motion.track_points(feats, ref, handles, r2)
            reached = motion.all_reached(handles, targets_rc, stop)
            if reached or iterations >= self.max_iters:
                break
            loss = motion.motion_supervision_loss(feats, handles, targets_rc, r1)
            loss = loss + self.lam * motion.mask_loss(feats, feats0, fixed)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            iterations += 1
        return DragOutcome(img.detach(), handles, iterations, reached)

    def invert(self, g: Generator, target: Tensor) -> tuple[Generator, Tensor, list[Tensor], dict]:
        """Project `target` (1, 3, R, R), optionally pivotal-tune; returns (generator, ws, noises, info)."""
        proj = project(
            g,
            target,
            self.loss,
            steps=self.inversion_steps,
            lr=self.inversion_lr,
            space=self.inversion_space,
            optimize_noise=self.optimize_noise,
            noise_weight=self.noise_regularization,
            w_avg_samples=self.w_avg_samples,
            seed=self.seed,
        )
        info = {
            "inversion/loss_first": proj.losses[0] if proj.losses else None,
            "inversion/loss_last": proj.losses[-1] if proj.losses else None,
        }
        if self.pti_steps > 0:
            g, pti_losses = pivotal_tuning(g, proj, target, self.loss, self.pti_steps, self.pti_lr)
            info["pti/loss_last"] = pti_losses[-1]
        with torch.no_grad():
            img, _ = g.synthesis(proj.ws, noises=proj.noises)
            info["recon_mse"] = float(F.mse_loss(img, target))  # images in [-1, 1]
            p = self.loss.perceptual(img, target)
            if p is not None:
                info["recon_lpips"] = float(p)
        return g, proj.ws, proj.noises, info

    def edit(self, sample: DragSample) -> EditResult:
        """Edit one sample: 1 route, 2 map into the square domain, 3 invert, 4 drag, 5 composite back."""
        torch.manual_seed(self.seed)
        reset_peak_memory(self.device)
        t_route = time.perf_counter()
        name, choice = self.route(sample)  # 1. route
        routed = {"gan_model": name or ""}
        if choice is not None:
            routed.update({f"clip_sim/{n}": s for n, s in choice.similarities.items()})
        if name is None:
            reason = f"no StyleGAN2 configured for category {sample.category!r} (method.category_routes)"
            return EditResult(
                image=sample.image.copy(), handles=None, info={"reason": reason, **routed}, status="unsupported"
            )
        g, weights = self.generator(name)
        routed["time/routing"] = time.perf_counter() - t_route  # incl. loading the generator the first time
        res = g.img_resolution
        points = np.concatenate([sample.handles, sample.targets], axis=0)  # 2. square domain
        mapping = plan_square(sample.height, sample.width, points, res, self.canvas)
        square = image_to_square(sample.image, mapping)
        fixed = torch.from_numpy(~mask_to_square(sample.mask, mapping)).to(self.device, torch.float32)
        handles_rc, targets_rc = (
            torch.tensor(xy_to_rc(mapping.to_square(p)), dtype=torch.float32, device=self.device)
            for p in (sample.handles, sample.targets)
        )  # (N, 2) (row, col) generator pixels
        handles_rc = handles_rc.clamp(0, res - 1)
        target_img = to_tensor_image(square, self.device)
        t0 = time.perf_counter()  # 3. invert
        g_inv, ws0, noises, inv_info = self.invert(g, target_img)
        t1 = time.perf_counter()  # 4. drag
        out = self.drag(g_inv, ws0, noises, handles_rc, targets_rc, fixed)
        t2 = time.perf_counter()
        edited = paste_square(sample.image, to_uint8_image(out.image), mapping)  # 5. composite
        box = regenerated_box(mapping)
        final_xy = mapping.from_square(rc_to_xy(out.handles_rc.cpu().numpy().astype(np.float64)))
        info = {
            **required_info({"inversion": t1 - t0, "drag": t2 - t1}, out.iterations, self.device),
            "reached_targets": out.reached,
            "weights": weights,
            **routed,
            "mapping": mapping.as_dict(),
            **inv_info,
            "distance/start_px": motion.pair_distances(handles_rc.round(), targets_rc),
            "distance/end_px": motion.pair_distances(out.handles_rc, targets_rc),
        }
        logger.info("%s: %s, %d iters, reached=%s", sample.sample_id, name, out.iterations, out.reached)
        return EditResult(image=edited, handles=final_xy, info=info, status="ok", regenerated_box=box)
