"""Benchmarks run apart from the tests: `python -m pytest benchmarks --benchmark-enable -s`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
# the benchmarks use the tests' problem bank (tests/problems.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
