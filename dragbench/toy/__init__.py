"""The toy world: procedural drag samples with exact ground-truth edits, and a small SD-shaped model.

See dragbench/toy/README.md. Submodules: scenes (renderer), samples (drag samples + GT), locate (find an
object by colour), model (configs + `load_toy_backbone`). Training the model is a tool outside the package:
`toy_training/` (train, assemble).
"""
