"""Test configuration: headless plots, a fixed hypothesis profile, deterministic torch."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import torch
from hypothesis import settings

settings.register_profile("dynamo", deadline=None, max_examples=25, derandomize=True)
settings.load_profile("dynamo")
torch.set_num_threads(min(2, torch.get_num_threads()))
