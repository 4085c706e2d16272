"""verify: certification of looped blocks, reports, and the ``dynamo`` command line.

A spec (TOML) names an architecture, an input distribution, initialisation draws, analyses and
requirements; :func:`certify` judges the requirements over the draws and returns a
:class:`Certificate`, rendered as JSON, Markdown, JUnit XML or HTML.

>>> import verify
>>> verify.DEFAULT_ARCHITECTURE["recall"], verify.DEFAULT_ARCHITECTURE["norm"]
('outer', 'outer')
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Loaded on first use, so that `import verify` (the command line's start, the pytest plugin) does
# not import torch until something needs it.
_EXPORTS: dict[str, str] = {
    "build_model": "._certify",
    "certify": "._certify",
    "draw_inputs": "._certify",
    "stacked_reach": "._certify",
    "task_batch": "._certify",
    "TrainedDraw": "._train",
    "train": "._train",
    "DEFAULT_ARCHITECTURE": "._reach",
    "ReachabilityReport": "._reach",
    "clopper_pearson": "._reach",
    "default_model": "._reach",
    "default_system": "._reach",
    "reachability_report": "._reach",
    "BASIS": "._report",
    "Certificate": "._report",
    "DrawResult": "._report",
    "Environment": "._report",
    "RequirementResult": "._report",
    "Timestamp": "._report",
    "basis": "._report",
    "certificate_schema": "._report",
    "METRICS": "._metrics",
    "DrawContext": "._metrics",
    "Metric": "._metrics",
    "metric": "._metrics",
    "register_metric": "._metrics",
    "unregister_metric": "._metrics",
    "Analysis": "._spec",
    "Architecture": "._spec",
    "Draws": "._spec",
    "Inputs": "._spec",
    "Requirement": "._spec",
    "Spec": "._spec",
    "SpecError": "._spec",
    "VERDICT_VALUES": "._metrics",
    "Renderer": "._render",
    "register_renderer": "._render",
    "render": "._render",
    "renderer": "._render",
    "renderers": "._render",
    "unregister_renderer": "._render",
    "default_spec": "._spec",
    "CellResult": "._sweep",
    "Sweep": "._sweep",
    "SweepCell": "._sweep",
    "SweepReport": "._sweep",
    "load_sweep": "._sweep",
    "run_sweep": "._sweep",
    "load_spec": "._spec",
    "parse_requirement": "._spec",
    "spec_schema": "._spec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        try:  # a submodule, e.g. verify._spec
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError:
            raise AttributeError(f"module 'verify' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from ._certify import build_model as build_model
    from ._certify import certify as certify
    from ._certify import draw_inputs as draw_inputs
    from ._certify import stacked_reach as stacked_reach
    from ._certify import task_batch as task_batch
    from ._metrics import METRICS as METRICS
    from ._metrics import VERDICT_VALUES as VERDICT_VALUES
    from ._metrics import DrawContext as DrawContext
    from ._metrics import Metric as Metric
    from ._metrics import metric as metric
    from ._metrics import register_metric as register_metric
    from ._metrics import unregister_metric as unregister_metric
    from ._reach import DEFAULT_ARCHITECTURE as DEFAULT_ARCHITECTURE
    from ._reach import ReachabilityReport as ReachabilityReport
    from ._reach import clopper_pearson as clopper_pearson
    from ._reach import default_model as default_model
    from ._reach import default_system as default_system
    from ._reach import reachability_report as reachability_report
    from ._render import Renderer as Renderer
    from ._render import register_renderer as register_renderer
    from ._render import render as render
    from ._render import renderer as renderer
    from ._render import renderers as renderers
    from ._render import unregister_renderer as unregister_renderer
    from ._report import BASIS as BASIS
    from ._report import Certificate as Certificate
    from ._report import DrawResult as DrawResult
    from ._report import Environment as Environment
    from ._report import RequirementResult as RequirementResult
    from ._report import Timestamp as Timestamp
    from ._report import basis as basis
    from ._report import certificate_schema as certificate_schema
    from ._spec import Analysis as Analysis
    from ._spec import Architecture as Architecture
    from ._spec import Draws as Draws
    from ._spec import Inputs as Inputs
    from ._spec import Requirement as Requirement
    from ._spec import Spec as Spec
    from ._spec import SpecError as SpecError
    from ._spec import default_spec as default_spec
    from ._spec import load_spec as load_spec
    from ._spec import parse_requirement as parse_requirement
    from ._spec import spec_schema as spec_schema
    from ._sweep import CellResult as CellResult
    from ._sweep import Sweep as Sweep
    from ._sweep import SweepCell as SweepCell
    from ._sweep import SweepReport as SweepReport
    from ._sweep import load_sweep as load_sweep
    from ._sweep import run_sweep as run_sweep
    from ._train import TrainedDraw as TrainedDraw
    from ._train import train as train
