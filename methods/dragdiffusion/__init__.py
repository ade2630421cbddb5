"""DragDiffusion (Shi et al., CVPR 2024) on diffusers: LoRA, inversion, latent drag, guided denoising."""

from methods.dragdiffusion.method import DragDiffusion

__all__ = ["DragDiffusion"]
