"""Test configuration: headless plots, a fixed hypothesis profile, one torch thread."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import torch
from hypothesis import settings

settings.register_profile("dynamo", deadline=None, max_examples=25, derandomize=True)
settings.load_profile("dynamo")
# one thread, as the command line and the pytest plugin use by default: the kernels under test
# are small, and on a shared 2-core machine a second thread mostly waits (issue 13: the suite took
# 14-52 min with torch's default threads and a busy core, under 2 min with one thread)
torch.set_num_threads(1)
