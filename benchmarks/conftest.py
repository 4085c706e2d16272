"""Benchmarks run apart from the tests: `python -m pytest benchmarks --benchmark-enable -s`."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")
