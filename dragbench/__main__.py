"""`python -m dragbench …` entry point (see dragbench/cli.py)."""

from __future__ import annotations

from dragbench.cli import main

raise SystemExit(main())
