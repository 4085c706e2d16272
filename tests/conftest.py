"""Test configuration: headless plots, a fixed hypothesis profile, one torch thread."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import torch
from hypothesis import HealthCheck, settings

# derandomized (the same cases on every run and machine), no example database, and no health
# checks on slow or large draws: the soundness properties build and evaluate whole models per case
settings.register_profile(
    "dynamo",
    deadline=None,
    max_examples=25,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("dynamo")
# one thread, as the command line and the pytest plugin use by default: the kernels under test
# are small, and on a shared 2-core machine a second thread mostly waits (issue 13: the suite took
# 14-52 min with torch's default threads and a busy core, under 2 min with one thread)
torch.set_num_threads(1)
