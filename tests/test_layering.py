"""The layering of the three packages (issue 14): dynamo <- theory <- verify.

Read from the source with ``ast``, so every import counts, the lazy ones inside functions and the
type-checking ones included: nothing above the engine imports an underscore name of another
package (``dynamo.kernel`` is the declared surface for what the public API does not cover), no
package imports one above it, and the engine's module-level imports form no circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dynamo", "theory", "verify")
RANK = {name: i for i, name in enumerate(PACKAGES)}


def _modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path, *, top_level_only: bool = False) -> list[tuple[str, str]]:
    """``(imported module, imported name or "")`` for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes: list[ast.AST]
    if top_level_only:
        nodes = []
        for stmt in tree.body:  # module level, and the bodies of module-level ifs (TYPE_CHECKING)
            nodes.append(stmt)
            if isinstance(stmt, ast.If):
                nodes.extend(stmt.body)
    else:
        nodes = list(ast.walk(tree))
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [(alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, path, node)
            out += [(target, alias.name) for alias in node.names]
    return out


def _private(dotted: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in dotted.split("."))


@pytest.mark.parametrize("package", ["theory", "verify"])
def test_nothing_above_the_engine_imports_an_underscore_name_of_another_package(
    package: str,
) -> None:
    bad = []
    for module, path in _modules(package).items():
        for target, name in _imports(module, path):
            top = target.split(".")[0]
            if top not in PACKAGES or top == package:
                continue
            if _private(target) or (name.startswith("_") and not name.startswith("__")):
                bad.append(f"{module}: from {target} import {name}")
        # attribute access on an imported package: dy._x, dynamo._x, theory._x
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {"dy": "dynamo", "dynamo": "dynamo", "theory": "theory"}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and aliases.get(node.value.id, package) != package
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                bad.append(f"{module}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not bad, "private names used across packages:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_package_imports_one_above_it(package: str) -> None:
    bad = []
    for module, path in _modules(package).items():
        for target, _ in _imports(module, path):
            top = target.split(".")[0]
            if top in RANK and RANK[top] > RANK[package]:
                bad.append(f"{module} imports {target}")
    assert not bad, "\n".join(bad)


def test_the_engine_module_graph_has_no_circle_and_errors_is_at_the_bottom() -> None:
    mods = _modules("dynamo")
    graph = nx.DiGraph()
    for module, path in mods.items():
        graph.add_node(module)
        for target, name in _imports(module, path, top_level_only=True):
            # "from . import x" and "from .pkg import mod" name modules, not attributes
            for cand in (f"{target}.{name}", target):
                if cand in mods and cand != module:
                    graph.add_edge(module, cand)
                    break
    # a subpackage's __init__ gathers its modules: an edge from one of them into the subpackage
    # is the package's public face, not a dependency on its siblings. Not so for the top-level
    # package: an engine module importing `dynamo` itself goes through everything
    for module in list(graph.nodes):
        for target in list(graph.successors(module)):
            if module.startswith(target + ".") and target != "dynamo":
                graph.remove_edge(module, target)
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import circles among dynamo's modules: {cycles[:5]}"
    below = set(graph.successors("dynamo.errors"))
    assert below <= {"dynamo._results"}, below
    assert "dynamo.errors" not in nx.descendants(graph, "dynamo._results")
    for target, _ in _imports("dynamo.errors", mods["dynamo.errors"]):
        assert target.split(".")[0] != "dynamo" or target == "dynamo._results", target


def test_the_kernel_names_exist_and_are_the_engines_own() -> None:
    import dynamo.kernel as kernel
    from dynamo import _compat, _lipschitz, _results, _validate

    for name in kernel.__all__:
        assert hasattr(kernel, name), name
    assert kernel.attention_rule is _lipschitz._attention_rule
    assert kernel.prime_forward_ad is _compat._prime_forward_ad
    assert kernel.plain is _results._plain
    assert kernel.MAX_SEED == _validate.MAX_SEED
    # the CLI keeps its own copy so that it starts without importing torch
    import verify.cli

    assert verify.cli._MAX_SEED == kernel.MAX_SEED
