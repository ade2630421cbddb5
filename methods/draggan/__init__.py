"""DragGAN baseline (protocol §5): StyleGAN2 generator, safe checkpoint loading, GAN inversion, the drag loop."""

from methods.draggan.method import DragGAN

__all__ = ["DragGAN"]
