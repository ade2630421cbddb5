"""The Hydra app: run a config or a sweep, write results, log to W&B, draw figures (DESIGN.md "Command line").

Importing this package registers the `${repo_root:}` resolver used by conf/paths/default.yaml.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"

OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT), replace=True)
