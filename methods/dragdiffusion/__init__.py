"""DragDiffusion (Shi et al., CVPR 2024) on diffusers: LoRA, inversion, latent drag, guided denoising."""
