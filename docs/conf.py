"""Sphinx configuration for the dynamo documentation.

Build (warnings are errors; the pages execute their code cells and draw their plots)::

    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

# Headless matplotlib everywhere: in this process and in the notebook kernels it starts (they
# inherit the environment). The executed pages switch their kernel to the inline backend, which
# renders with Agg and needs no display.
os.environ.setdefault("MPLBACKEND", "Agg")

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
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_ivar = True  # Attributes sections as field lists: no duplicate attribute entries
napoleon_use_rtype = False
# `solve` lists its methods under "Methods": render them as a parameter-style list, not as
# py:method directives (they are strings, not callables).
napoleon_custom_sections = [("Methods", "params_style")]

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
