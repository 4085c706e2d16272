"""The dynamo pytest plugin: certify specs inside a project's own test suite.

Loaded automatically (``pytest11`` entry point ``dynamo``) when dynamo is installed. It is thin:
loading it imports neither torch nor dynamo; they load when a test first asks for a certificate.

What it adds:

* the marker ``@pytest.mark.dynamo(spec="path/to/spec.toml", seeds=None, checkpoint=None)``
  (paths relative to the test file's folder; ``checkpoint``, a safetensors file or a list of
  them, judges trained weights, each one draw, as the spec's ``checkpoint`` key does);
* the fixture ``dynamo_certificate``: the :class:`verify.Certificate` of the marked test's spec,
  made once per session and shared by every test naming the same spec;
* the fixture ``dynamo_certify``: a function ``(spec, seeds=None, checkpoint=None) ->
  Certificate`` for a path or a :class:`verify.Spec`, cached the same way (parametrize a test over
  the checkpoints of a training run to gate each one);
* the options ``--dynamo-seeds N`` (initialisation draws for every spec), ``--dynamo-device`` and
  ``--dynamo-threads N`` (torch's CPU threads while a spec is certified; default 1, restored
  afterwards: dynamo's kernels are small, and extra threads mostly wait on each other, badly so
  on a busy machine) and ``--dynamo-allow-module MODULE`` (a module a spec's
  ``factory = "package.module:function"`` may import; a factory file next to the spec,
  ``factory = "file.py:function"``, needs no option);
* a terminal summary line per certified spec.

A test then asserts what it needs, e.g. ``dynamo_certificate.assert_passed()`` (a readable failure
naming each failed requirement), or looks at single requirements and per-draw metrics. For
single blocks without a spec, use the assertions in :mod:`dynamo.testing`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

_KEY = pytest.StashKey[dict[Any, Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dynamo", "dynamo certification")
    group.addoption(
        "--dynamo-seeds",
        type=int,
        default=None,
        metavar="N",
        help="initialisation draws for every certified spec (overrides the specs)",
    )
    group.addoption(
        "--dynamo-device",
        default=None,
        metavar="DEVICE",
        help="device for certification (default cpu)",
    )
    group.addoption(
        "--dynamo-threads",
        type=int,
        default=1,
        metavar="N",
        help="torch CPU threads while a spec is certified (default 1: dynamo's kernels are "
        "small; more threads mostly wait on each other); the session's own count is restored "
        "after each certification",
    )
    group.addoption(
        "--dynamo-allow-module",
        action="append",
        default=[],
        metavar="MODULE",
        help="let a spec's factory = 'package.module:function' import this module (repeat for "
        "more); a spec runs no other module's code",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "dynamo(spec, seeds=None, checkpoint=None): certify a dynamo spec (path relative to the "
        "test file), or trained weights of its architecture, and give the test its certificate "
        "through the dynamo_certificate fixture",
    )
    config.stash[_KEY] = {}
    n = config.getoption("--dynamo-seeds")
    if n is not None and n < 1:
        raise pytest.UsageError(f"--dynamo-seeds {n}: give at least 1 initialisation draw")
    threads = config.getoption("--dynamo-threads")
    if threads < 1:
        raise pytest.UsageError(f"--dynamo-threads {threads}: give at least 1 thread")
    device = config.getoption("--dynamo-device")
    if device is not None:  # torch is imported only when a device is named
        from dynamo.errors import InvalidArgumentError

        from ._certify import _resolve_device

        try:
            _resolve_device(device, f"--dynamo-device {device}")
        except InvalidArgumentError as err:
            raise pytest.UsageError(str(err)) from None


def _checkpoints(value: Any, where: Path) -> tuple[str, ...] | None:
    """The checkpoint(s) a test names, as absolute paths (relative ones from the test's folder)."""
    if value is None:
        return None
    items = [value] if isinstance(value, (str, Path)) else value
    if not isinstance(items, (list, tuple)) or not items:
        pytest.fail(
            f"dynamo(checkpoint={value!r}): give a path to a safetensors file or a list of them",
            pytrace=False,
        )
    out = []
    for item in items:
        if not isinstance(item, (str, Path)):
            pytest.fail(f"dynamo(checkpoint=...): {item!r} is not a path", pytrace=False)
        p = Path(item)
        out.append(str((p if p.is_absolute() else where / p).resolve()))
    return tuple(out)


def _certify(
    config: pytest.Config,
    spec: Any,
    seeds: int | None,
    where: Path,
    checkpoint: Any = None,
) -> Any:
    import verify

    cache = config.stash[_KEY]
    ckpts = _checkpoints(checkpoint, where)
    if ckpts is not None and seeds is not None:
        pytest.fail(
            "dynamo(seeds=..., checkpoint=...): the checkpoints are the draws; give one of them",
            pytrace=False,
        )
    # the command line's --dynamo-seeds counts initialisation draws: trained weights have none
    n = config.getoption("--dynamo-seeds") if seeds is None and ckpts is None else seeds
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        pytest.fail(
            f"dynamo(seeds={n!r}): seeds= is how many draws (an integer, at least 1), counted "
            "from the spec's first seed; list particular seeds in the spec's [draws] seeds",
            pytrace=False,
        )
    device = config.getoption("--dynamo-device")
    allow = tuple(config.getoption("--dynamo-allow-module"))
    threads = config.getoption("--dynamo-threads")
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        path = path if path.is_absolute() else (where / path)
        key: Any = (str(path.resolve()), n, device, ckpts)
        if key not in cache:
            try:
                loaded = verify.load_spec(path, allow_modules=allow)
            except verify.SpecError as err:  # the message says it all; the plugin's source won't
                pytest.fail(str(err), pytrace=False)
            if loaded.checkpoint is not None and ckpts is None:
                n = seeds  # the spec's checkpoints are its draws
            cache[key] = _run(verify, loaded, n, device, threads, allow, ckpts)
        return cache[key]
    if isinstance(spec, verify.Spec):
        if spec.checkpoint is not None and ckpts is None:
            n = seeds
        key = (spec.model_dump_json(), n, device, ckpts)
        if key not in cache:
            cache[key] = _run(verify, spec, n, device, threads, allow, ckpts)
        return cache[key]
    raise TypeError(
        f"dynamo_certify(spec): spec must be a path to a TOML spec or a verify.Spec, not "
        f"{type(spec).__name__}"
    )


def _run(
    verify: Any,
    spec: Any,
    n: int | None,
    device: str | None,
    threads: int,
    allow: tuple[str, ...],
    checkpoints: tuple[str, ...] | None = None,
) -> Any:
    if not spec.requirements:
        pytest.fail(
            f"dynamo spec {spec.name!r} has no requirements: nothing to certify; add some",
            pytrace=False,
        )
    import torch

    seeds = None if n is None else spec.draws.resolved(count=n)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return verify.certify(
            spec,
            seeds=seeds,
            device=device,
            progress=False,
            allow_modules=allow,
            checkpoints=checkpoints,
        )
    except verify.SpecError as err:  # a factory that fails: its one line, not dynamo's stack
        pytest.fail(f"dynamo spec {spec.name!r}: {err}", pytrace=False)
    except ValueError as err:  # InvalidArgumentError: seeds= with a spec whose checkpoints ...
        pytest.fail(f"dynamo spec {spec.name!r}: {err}", pytrace=False)
    finally:  # the project's own tests keep the thread count they had
        torch.set_num_threads(before)


@pytest.fixture
def dynamo_certify(request: pytest.FixtureRequest) -> Any:
    """``certify(spec, seeds=None, checkpoint=None)``: the certificate of a spec (path or
    ``verify.Spec``), or of trained weights of its architecture, made once per session. Paths are
    relative to the test file's folder."""
    where = Path(str(request.node.path)).parent

    def certify(spec: Any, seeds: int | None = None, checkpoint: Any = None) -> Any:
        return _certify(request.config, spec, seeds, where, checkpoint)

    return certify


@pytest.fixture
def dynamo_certificate(request: pytest.FixtureRequest) -> Any:
    """The certificate of the spec named by the test's ``@pytest.mark.dynamo(spec=...)``."""
    marker = request.node.get_closest_marker("dynamo")
    if marker is None:
        raise pytest.UsageError(
            f"{request.node.nodeid}: the dynamo_certificate fixture needs "
            "@pytest.mark.dynamo(spec='path/to/spec.toml') on the test"
        )
    spec = marker.kwargs.get("spec", marker.args[0] if marker.args else None)
    if spec is None:
        raise pytest.UsageError(
            f"{request.node.nodeid}: @pytest.mark.dynamo needs spec='path/to/spec.toml'"
        )
    unknown = set(marker.kwargs) - {"spec", "seeds", "checkpoint"}
    if unknown:
        raise pytest.UsageError(
            f"{request.node.nodeid}: @pytest.mark.dynamo got unknown argument(s) "
            f"{sorted(unknown)}; it takes spec=, seeds= and checkpoint="
        )
    where = Path(str(request.node.path)).parent
    return _certify(
        request.config, spec, marker.kwargs.get("seeds"), where, marker.kwargs.get("checkpoint")
    )


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    cache = config.stash.get(_KEY, {})
    if not cache:
        return
    terminalreporter.section("dynamo certificates")
    for cert in cache.values():
        n = len(cert.requirements)
        word = "PASSED" if cert.passed else "FAILED"
        terminalreporter.write_line(
            f"{cert.name}: {word} ({n - len(cert.failed)}/{n} requirements over "
            f"{len(cert.draws)} draw(s))"
        )
