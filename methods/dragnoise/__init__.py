"""DragNoise (Liu et al., CVPR 2024) on diffusers: LoRA, inversion, bottleneck drag, denoising with it injected."""

from methods.dragnoise.method import DragNoise

__all__ = ["DragNoise"]
