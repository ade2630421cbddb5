"""Tools that trained the committed toy-world model (`dragbench/toy/weights`): not part of the harness.

`python -m toy_training.train` (one command, resumable) writes flat weights; `python -m toy_training.assemble
FLAT --dest dragbench/toy/weights` turns them into the diffusers pipeline layout `dragbench.toy.model` loads.
"""
