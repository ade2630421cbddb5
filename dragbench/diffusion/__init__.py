"""The diffusion toolkit below the methods: pieces a latent-diffusion drag method composes.

- `conditioning`: `Conditioning` (what the UNet is conditioned on) and `ConditionedBackbone` (the interface a
  backbone implements: `condition(prompt)`, `predict_noise(x, t, cond)`; `dragbench.backbone.Backbone`
  is one).
- `ddim`: image encoding/decoding, DDIM inversion (cached; `cached_inversion` / `inversion_key` as the
  DragDiffusion family runs and keys it) and denoising from an intermediate timestep; `to_uint8` (decoded image
  back to the input size).
- `supervision_grid`: DragDiffusion's half-size supervision grid and the points on it (DragNoise, GoodDrag).
- `features`: UNet decoder-block features by forward hooks (DragDiffusion's supervision, DIFT).
- `attention`: self-attention control (key/value edits from a layer and step on; mutual self-attention;
  keys/values stored during inversion and injected per timestep, FastDrag's `StoredKeyValues`),
  layers counted in the UNet's own module tree; `attention_for`: the official processors with / without LoRA.
- `lora`, `lora_adapter`, `lora_augment`: per-image LoRA (train with snapshots and cache, apply, remove;
  `PerImageLora` = a method's LoRA settings, `lora_digest` for cache keys).
- `drag_loop`: latent optimisation with pluggable point tracker (`point_tracking`) and motion-supervision
  loss (`motion_supervision`), plus the mask term (`mask_term`); `precision`: per-stage casting.
- `bottleneck`: capture / replace the UNet mid-block output (DragNoise optimises and injects it).

Import the modules themselves (this package imports none, so `dragbench.backbone` can use `conditioning`).
"""
