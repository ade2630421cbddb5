"""Where the tests find data that is not part of the repo (real DragBench samples, official-code references).

`$DRAGBENCH_SHARED_DATA` (default: `../shared/data` beside the repo, where developers and CI have it). Tests that
need it skip cleanly when it is absent, as it is for outside users.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA = Path(
    os.environ.get("DRAGBENCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
REAL_SAMPLES = SHARED_DATA / "dragbench-real"  # 12 real DragBench samples in the official layout
OFFICIAL_REF = SHARED_DATA / "official-ref"  # the official DragDiffusion code's outputs on tiny weights
