"""What every job dir records about where its numbers came from: git state, package versions, device."""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import subprocess
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# Packages whose version can move a number; each becomes `<name>_version` in metrics.json / results.csv.
TRACKED_PACKAGES = ("dragbench-harness", "torch", "diffusers", "transformers", "peft", "lpips", "numpy")


def git_state(repo: Path) -> dict[str, str | bool]:
    """Commit hash and dirty flag of the repository at `repo` ("unknown" outside a git checkout)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        log.warning("git state unavailable for %s: %s", repo, err)
        return {"git_commit": "unknown", "git_dirty": True}
    return {"git_commit": commit, "git_dirty": bool(status.strip())}


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    """`{"<name>_version": version}` for each installed package ("absent" if not installed)."""
    versions = {}
    for name in names:
        key = name.replace("-", "_").replace("dragbench_harness", "harness") + "_version"
        try:
            versions[key] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[key] = "absent"
    return versions


def device_description(device: torch.device) -> str:
    """Human-readable device, e.g. "cpu (x86_64)" or "cuda:0 (NVIDIA H100 80GB HBM3)"."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.machine()})"


def collect(repo: Path, device: torch.device) -> dict[str, str | bool]:
    """Everything above in one flat dict."""
    return {**git_state(repo), **package_versions(), "device": device_description(device)}
