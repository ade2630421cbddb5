"""A method changing only DragDiffusion's point tracker: this file + conf/method/dragdiffusion_cosine.yaml.

The whole method is the tracker below; the YAML composes `method=dragdiffusion` and sets
`point_tracker` to it. Everything else (LoRA, inversion, drag loop, motion supervision, denoising) is the
toolkit's (`dragbench.diffusion`) as DragDiffusion composes it. Test-only (importable as `cosine_tracking`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class CosineTracker:
    """Nearest neighbour by cosine similarity (instead of DragDiffusion's L1) in a (2 r + 1)^2 window.

    Args:
        radius: search radius in supervision-grid pixels (the window is clipped at the grid borders).
    """

    def __init__(self, radius: int = 3) -> None:
        self.radius = radius
        self.calls = 0

    def __call__(self, feats: torch.Tensor, feats0: torch.Tensor, handles_rc: torch.Tensor,
                 handles_init_rc: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        h, w = feats.shape[-2], feats.shape[-1]
        init, cur = handles_init_rc.long(), handles_rc.long()  # (N, 2)
        ref = feats0[0][:, init[:, 0], init[:, 1]]  # (C, N)
        offsets = torch.arange(-self.radius, self.radius + 1, device=feats.device)  # (K,)
        rows = (cur[:, :1] + offsets).clamp(0, h - 1)  # (N, K); clamped = the clipped window, repeated
        cols = (cur[:, 1:] + offsets).clamp(0, w - 1)  # (N, K)
        window = feats[0][:, rows[:, :, None], cols[:, None, :]]  # (C, N, K, K)
        similarity = F.cosine_similarity(window, ref[:, :, None, None], dim=0)  # (N, K, K)
        best = similarity.flatten(1).argmax(dim=1)  # (N,)
        k = 2 * self.radius + 1
        new_rows = rows.gather(1, (best // k)[:, None])[:, 0]
        new_cols = cols.gather(1, (best % k)[:, None])[:, 0]
        return torch.stack([new_rows, new_cols], dim=1).to(handles_rc.dtype)  # (N, 2)
