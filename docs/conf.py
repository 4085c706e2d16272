"""Sphinx configuration for the dynamo documentation.

Build (warnings are errors; the pages execute their code cells and draw their plots)::

    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

# Headless matplotlib everywhere: in this process and in the notebook kernels it starts (they
# inherit the environment). The executed pages switch their kernel to the inline backend, which
# renders with Agg and needs no display.
os.environ.setdefault("MPLBACKEND", "Agg")
# The pages compute on tiny tensors. With torch's default of one intra-op thread per core, a
# kernel that shares the cores with other work can run 20x slower (measured: the sweep on the
# models page took 62 s instead of 2.7 s on 2 busy cores); one thread per kernel avoids that.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# the kernels that execute the pages import dynamo/verify from this checkout as well
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
)

import dynamo

# -- project -----------------------------------------------------------------------------------
project = "dynamo"
author = "dynamo developers"
copyright = "dynamo developers"
release = dynamo.__version__
version = release

# -- extensions --------------------------------------------------------------------------------
extensions = [
    "myst_nb",
    "sphinx_proof",
    "sphinxcontrib.bibtex",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "jupyter_execute", ".jupyter_cache", "Thumbs.db", ".DS_Store"]

# -- MyST / MyST-NB ----------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

nb_execution_mode = "cache"
nb_execution_cache_path = str(Path(__file__).parent / "_build" / ".jupyter_cache")
nb_execution_raise_on_error = True
nb_execution_timeout = 300
nb_execution_show_tb = True
nb_merge_streams = True

# -- bibliography ------------------------------------------------------------------------------
bibtex_bibfiles = ["references.bib"]
bibtex_default_style = "plain"
bibtex_reference_style = "author_year"

# -- autodoc / napoleon (numpydoc style) --------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_ivar = False  # Attributes sections as attribute entries (dataclass fields)
napoleon_use_rtype = True  # one "Return type" entry, not a second one from the type hints
# `solve` lists its methods under "Methods" as a definition list of strings: render it as a plain
# section, not as py:method directives (napoleon's built-in meaning of "Methods").
napoleon_custom_sections = ["Methods"]

# -- HTML --------------------------------------------------------------------------------------
if importlib.util.find_spec("sphinx_book_theme") is not None:
    html_theme = "sphinx_book_theme"
    html_theme_options = {
        "show_toc_level": 2,
        "use_download_button": False,
    }
else:  # pragma: no cover - fallback when the book theme is not installed
    html_theme = "alabaster"
html_title = f"dynamo {release}"
html_static_path: list[str] = []


# -- autodoc: module-level data ------------------------------------------------------------------
# A re-exported constant (``dynamo.METHODS``, ``verify.DEFAULT_ARCHITECTURE``) has no docstring of
# its own, so autodoc would show the docstring of its *type* (``dict``). Replace that with the
# constant's ``#:`` doc comment from the module that defines it, or with nothing.
def _data_docstring(
    app: Any, what: str, name: str, obj: object, options: Any, lines: list[str]
) -> None:
    if what != "data" or type(obj).__doc__ is None:
        return
    if "\n".join(lines).strip() != type(obj).__doc__.strip():
        return
    from sphinx.pycode import ModuleAnalyzer

    lines.clear()
    package, _, attr = name.rpartition(".")
    for modname, module in sorted(sys.modules.items()):
        if not modname.startswith(package + ".") or getattr(module, attr, None) is not obj:
            continue
        try:
            docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
        except Exception:  # no source to analyse: keep the docstring empty
            continue
        if ("", attr) in docs:
            lines.extend(docs["", attr])
            return


def setup(app: Any) -> None:
    app.connect("autodoc-process-docstring", _data_docstring)
