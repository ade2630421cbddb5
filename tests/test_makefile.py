"""`make test` passes pytest's exit status through: "no tests collected" (5) must fail CI, not pass it."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import REPO_ROOT


@pytest.mark.skipif(shutil.which("make") is None, reason="Requires: make")
@pytest.mark.parametrize("pytest_rc", [0, 1, 5])
def test_make_test_exits_with_pytests_status(tmp_path, pytest_rc):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"  # stands in for `.venv/bin/python -m pytest ...`
    python.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'args'}\nexit {pytest_rc}\n")
    python.chmod(0o755)
    (venv / ".installed").touch()  # newer than pyproject.toml: make does not rebuild the venv
    proc = subprocess.run(
        ["make", "-s", "-C", str(REPO_ROOT), "test", f"VENV={venv}"], capture_output=True, text=True
    )
    assert (tmp_path / "args").read_text().split()[:2] == ["-m", "pytest"]
    assert (proc.returncode == 0) == (pytest_rc == 0), proc.stderr
