"""SDE-Drag (Nie et al., ICLR 2024): copy-and-paste of latent patches between a stochastic forward pass and
its exact Cycle-SDE reversal (protocol §10)."""
