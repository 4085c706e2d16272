"""Report formats: one registry of renderers, each a name, a title and a function from a
:class:`~verify.Certificate` to text.

The four built-in formats are the certificate's own ``to_json``, ``to_markdown``, ``to_junit`` and
``to_html``. A format registered with :func:`register_renderer` (or declared by an installed
package under the entry-point group ``dynamo.renderers``) is written by the command line's
``--report NAME=PATH`` like the built-in ones. The command line checks its report options before any
work starts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dynamo.errors import InvalidArgumentError

if TYPE_CHECKING:
    from ._report import Certificate

__all__ = [
    "Renderer",
    "register_renderer",
    "render",
    "renderer",
    "renderers",
    "unregister_renderer",
]

#: Where installed packages declare report formats (each entry point loads a Renderer).
ENTRY_POINT_GROUP = "dynamo.renderers"

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclass(frozen=True)
class Renderer:
    """One report format.

    Parameters
    ----------
    name : str
        Lower case, e.g. ``"markdown"``: the command line's ``--report NAME=PATH``.
    title : str
        What the format is called in messages, e.g. ``"Markdown"``.
    render : callable
        ``render(cert: Certificate) -> str``: the whole report.
    suffix : str
        The usual file suffix (for documentation; any path may be given).

    Examples
    --------
    >>> from verify import Certificate, renderer
    >>> from verify._report import _EXAMPLE  # a small certificate
    >>> cert = Certificate.model_validate_json(_EXAMPLE)
    >>> md = renderer("markdown")
    >>> md.title, md.render(cert).splitlines()[0]
    ('Markdown', '## ❌ dynamo certify: example — FAILED')
    """

    name: str
    title: str
    render: Callable[[Certificate], str]
    suffix: str = ""


_BUILTIN = (
    Renderer("json", "JSON", lambda cert: cert.to_json(), ".json"),
    Renderer("markdown", "Markdown", lambda cert: cert.to_markdown(), ".md"),
    Renderer("junit", "JUnit XML", lambda cert: cert.to_junit(), ".xml"),
    Renderer("html", "HTML", lambda cert: cert.to_html(), ".html"),
)
_REGISTRY: dict[str, Renderer] = {r.name: r for r in _BUILTIN}
#: entry points that could not be loaded: their name -> why (asked for, they say so)
_BROKEN: dict[str, str] = {}
_loaded_entry_points = False


def _load_entry_points() -> None:
    """Register the formats installed packages declare, once per process; one that fails to
    load is set aside with its reason, and the others (and the built-in formats) still work."""
    global _loaded_entry_points
    if _loaded_entry_points:
        return
    _loaded_entry_points = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {ep.name} = {ep.value} (group {ENTRY_POINT_GROUP})"
        try:
            r = ep.load()
        except Exception as err:  # an installed package's code
            _BROKEN[ep.name] = f"{where} failed to load: {type(err).__name__}: {err}"
            continue
        if not isinstance(r, Renderer):
            _BROKEN[ep.name] = f"{where} loads {type(r).__name__}, not a verify.Renderer"
            continue
        if r.name not in _REGISTRY:
            try:
                register_renderer(r)
            except (InvalidArgumentError, TypeError) as err:
                _BROKEN[ep.name] = f"{where}: {err}"


def renderers() -> tuple[Renderer, ...]:
    """Every registered format: the built-in ones first.

    >>> from verify import renderers
    >>> [r.name for r in renderers()][:4]
    ['json', 'markdown', 'junit', 'html']
    """
    _load_entry_points()
    return tuple(_REGISTRY.values())


def renderer(name: str) -> Renderer:
    """The format called ``name``.

    Raises
    ------
    KeyError
        Naming the registered formats.

    >>> from verify import renderer
    >>> renderer("junit").title
    'JUnit XML'
    """
    _load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        if name in _BROKEN:
            raise KeyError(f"renderer({name!r}): {_BROKEN[name]}") from None
        known = ", ".join(_REGISTRY)
        raise KeyError(
            f"renderer({name!r}): unknown report format; known formats: {known}"
        ) from None


def render(cert: Certificate, name: str) -> str:
    """The certificate as the report ``name``.

    >>> from verify import Certificate, render
    >>> from verify._report import _EXAMPLE  # a small certificate
    >>> print(render(Certificate.model_validate_json(_EXAMPLE), "json").splitlines()[0])
    {
    """
    from ._report import Certificate

    if not isinstance(cert, Certificate):
        raise TypeError(
            f"render(cert, {name!r}): cert must be a verify.Certificate, got {type(cert).__name__}"
        )
    fmt = renderer(name)
    text = fmt.render(cert)
    if not isinstance(text, str):
        raise TypeError(
            f"render(cert, {name!r}): the {fmt.title} renderer returned {type(text).__name__}, "
            "not text"
        )
    return text


def register_renderer(r: Renderer, *, replace: bool = False) -> Renderer:
    """Add a report format: :func:`render` and the command line's ``--report NAME=PATH`` then
    write it.

    Parameters
    ----------
    r : Renderer
    replace : bool
        Allow replacing an earlier registration of the same name (not a built-in one).

    Returns
    -------
    Renderer
        ``r``.

    Examples
    --------
    >>> from verify import Certificate, Renderer, register_renderer, render, unregister_renderer
    >>> from verify._report import _EXAMPLE  # a small certificate
    >>> def one_line(cert):
    ...     return f"{cert.name}: {'pass' if cert.passed else 'fail'}\\n"
    >>> _ = register_renderer(Renderer("oneline", "one line", one_line, ".txt"))
    >>> render(Certificate.model_validate_json(_EXAMPLE), "oneline")
    'example: fail\\n'
    >>> unregister_renderer("oneline")
    """
    if not isinstance(r, Renderer):
        raise TypeError(
            f"register_renderer(r): r must be a verify.Renderer, got {type(r).__name__}"
        )
    if not isinstance(r.name, str) or not _NAME.match(r.name):
        raise InvalidArgumentError(
            f"register_renderer(r): r.name={r.name!r} must be a lower-case word (letters, digits, "
            "'-' and '_', starting with a letter)"
        )
    if not isinstance(r.title, str) or not isinstance(r.suffix, str):
        raise InvalidArgumentError(
            f"register_renderer(r): {r.name}'s title and suffix must be strings"
        )
    if not isinstance(replace, bool):
        raise InvalidArgumentError(
            f"register_renderer(r): replace must be True or False, got {replace!r}"
        )
    if not callable(r.render):
        raise InvalidArgumentError(f"register_renderer(r): {r.name}.render must be callable")
    if r.name in {b.name for b in _BUILTIN}:
        raise InvalidArgumentError(
            f"register_renderer(r): {r.name} is a built-in format; choose another name"
        )
    if r.name in _REGISTRY and not replace:
        raise InvalidArgumentError(
            f"register_renderer(r): {r.name} is already registered; pass replace=True to replace it"
        )
    _REGISTRY[r.name] = r
    return r


def unregister_renderer(name: str) -> None:
    """Remove a format added by :func:`register_renderer` (the built-in ones stay).

    >>> from verify import unregister_renderer
    >>> unregister_renderer("html")
    Traceback (most recent call last):
    ...
    dynamo.errors.InvalidArgumentError: unregister_renderer('html'): a built-in format ...
    """
    if name in {b.name for b in _BUILTIN}:
        raise InvalidArgumentError(
            f"unregister_renderer({name!r}): a built-in format cannot be removed"
        )
    renderer(name)  # a KeyError naming the known formats
    del _REGISTRY[name]
