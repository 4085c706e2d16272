"""Shared by the tests and the doctests: headless matplotlib, and no figure outlives its test."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

# pytester runs throwaway projects for the tests of dynamo's own pytest plugin
pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")
