"""notebooks/explore_results.ipynb runs top to bottom on a tiny sweep (so it never rots)."""

from __future__ import annotations

import base64

import nbformat
import pytest

from experiments import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "explore_results.ipynb"


def test_explore_results_notebook_executes_on_a_tiny_sweep(run_app, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    sweep = tmp_path / "sweep"
    run_app("-m", "method=knob_echo", "eval=fast", "method.unet_block=2,3", f"hydra.sweep.dir={sweep}")
    monkeypatch.setenv("DRAGBENCH_SWEEP_DIR", str(sweep))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    table = next(o for o in outputs if "text/html" in o.get("data", {}))["data"]["text/html"]
    assert "2 rows × " in table  # one row per job
    pngs = [base64.b64decode(o["data"]["image/png"]) for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 2 and all(len(p) > 1000 for p in pngs)  # Fig. 7 panel + grid of edits
