"""Shared by the spec and certificate models; imports nothing heavy."""

from __future__ import annotations

import inspect
from typing import Any


def _summary_only(schema: dict[str, Any], cls: type[Any]) -> None:
    """JSON Schema descriptions carry a model's prose, not its docstring examples."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    text = doc.split("\n\n>>>")[0].split("\nExamples\n--------")[0].strip()
    if text:
        schema["description"] = text
