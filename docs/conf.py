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

# Markdown that a cell displays (report demos, survey tables) is parsed as MyST, whose tables
# render; myst-nb's default ("commonmark") has no tables and printed them as paragraphs of pipes
nb_render_markdown_format = "myst"
nb_execution_mode = "cache"
nb_execution_cache_path = str(Path(__file__).parent / "_build" / ".jupyter_cache")
nb_execution_raise_on_error = True
nb_execution_timeout = 300
nb_execution_show_tb = True
nb_merge_streams = True

# -- math from this build, not from a CDN ------------------------------------------------------
# Offline readers saw raw LaTeX: MathJax (2.7, BSD) is copied from jupyter-server-mathjax's
# package data into _static/mathjax after the build (_offline_assets).
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML"

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
html_static_path = ["_static"]
html_css_files = ["dynamo.css"]  # wrap long output lines instead of clipping them


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


# -- theory: one page per claim, generated from the registry at build time --------------------
def _md(text: str) -> str:
    """Text for inline code in Markdown."""
    return text.replace("`", "'")


def _claim_pages(app: Any) -> None:
    """Write docs/claims/<name>.md for every registered claim (its formal statement, the kind of
    proof it has, every step with sympy's answer, the false variants it rejects, the numeric
    check) and docs/claims/index.md with the table of all of them, all computed now. Only a
    claim proved in general is typeset as a theorem with a proof."""
    import theory

    out = Path(app.srcdir) / "claims"
    out.mkdir(exist_ok=True)
    names = []
    table = [
        "| claim | proof | lemmas cited | false variants rejected |",
        "|---|---|---|---|",
    ]
    for c in theory.registry():
        proof = c.prove()
        check = c.check()
        rejected = [(v.description, not c.prove_variant(v).ok) for v in c.variants]
        general = proof.ok and proof.kind is theory.ProofKind.GENERAL
        kind = proof.describe() if proof.ok else "FAILED: " + "; ".join(proof.failed())
        lines = [f"# {c.name}: {c.title}", ""]
        if general:
            lines += [
                f"```{{prf:theorem}} {c.title}",
                f":label: claim-{c.name.lower()}",
                "",
                f"${c.formal(latex=True)}$",
                "```",
            ]
        else:
            lines += [
                f"**Statement** (formal; {kind}: **not** a proof of the general statement):",
                "",
                f"$${c.formal(latex=True)}$$",
            ]
        lines += [
            "",
            "**In words:** " + c.statement,
            "",
            "**Hypotheses:** " + ("; ".join(c.hypotheses) if c.hypotheses else "none") + ".",
            "",
            ("**References:** " + "; ".join(c.references) + ".") if c.references else "",
            "",
        ]
        steps = []
        for i, step in enumerate(proof.steps, 1):
            mark = "✓" if step.ok else "✗"
            steps.append(f"{i}. {mark} {step.description}  ")
            steps.append(f"   {step.kind}: `{_md(step.expression)}`  ")
            steps.append(f"   sympy: `{_md(step.result)}`")
            steps.append("")
        for g, ok in zip(proof.goal, proof.reached, strict=True):
            steps.append(f"- {'✓' if ok else '✗'} goal reached: `{_md(theory.fact_str(g))}`")
        if general:
            lines += ["```{prf:proof}", f"Every step checked by sympy ({kind}):", "", *steps, "```"]
        else:
            lines += [f"**Derivation** ({kind}):", "", *steps]
        lines += [
            "",
            "**False variants this proof rejects** (`dynamo prove " + c.name + " --variants`):",
            "",
        ]
        lines += [f"- {'rejected' if r else 'ACCEPTED'}: {d}" for d, r in rejected]
        lines += [
            "",
            "**Numeric counterpart** (run through dynamo when these docs were built; "
            f"`dynamo prove {c.name} --check`):",
            "",
            f"> {'holds' if check.ok else 'FAILED'}: {check.message}",
            "",
        ]
        if c.uses:
            lines.append("Uses: " + ", ".join(f"[{u}]({u}.md)" for u in c.uses) + ".")
        (out / f"{c.name}.md").write_text("\n".join(lines) + "\n")
        names.append(c.name)
        n_rej = sum(r for _, r in rejected)
        n_steps = len(proof.steps)
        short = (
            f"{proof.kind.label}, {n_steps} steps"
            if proof.kind is not theory.ProofKind.INSTANCE
            else f"instance check ({'; '.join(proof.instances)}), {n_steps} steps"
        )
        cells = [
            f"[{c.name}]({c.name}.md)",
            short if proof.ok else kind,
            ", ".join(proof.lemmas) or "—",
            f"{n_rej} of {len(rejected)}: " + "; ".join(d for d, _ in rejected),
        ]
        table.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    kinds = [theory.get(n).prove().kind for n in names]
    counts = {k: sum(x is k for x in kinds) for k in theory.ProofKind}
    index = [
        "# Claims and proofs",
        "",
        "Every claim dynamo relies on, as a formal statement (sympy facts under stated",
        "assumptions) with a derivation that must reach it: identities and inequalities on",
        "symbols, cited lemmas whose hypotheses are checked where applied, chains and case splits.",
        "A derivation with a step that holds for one concrete instance only is labelled an",
        "**instance check**, never a proof of the general statement. C1–C14 are the field's claims",
        "and dynamo's own; R1–R9 are the per-layer Lipschitz rules behind every certified bound,",
        "proved about the very closed forms the rules evaluate",
        "(`dynamo.kernel.lipschitz_formulas`), so changing a rule's constant breaks its proof.",
        "Each claim registers false variants (a wrong constant, a dropped hypothesis, a stronger",
        "statement, the code's constant divided by 100) that its proof must reject",
        "(`dynamo prove --all --variants`; tests/test_theory.py).",
        "",
        f"Today: {counts[theory.ProofKind.GENERAL]} of {len(names)} claims proved in general, "
        f"{counts[theory.ProofKind.INSTANCE]} instance checks, "
        f"{counts[theory.ProofKind.NUMERIC]} numeric only.",
        "",
        *table,
        "",
        "```{toctree}",
        ":maxdepth: 1",
        ":hidden:",
        "",
        *names,
        "```",
    ]
    (out / "index.md").write_text("\n".join(index) + "\n")


def _offline_assets(app: Any, exc: Exception | None) -> None:
    """Copy MathJax into the HTML build, so that math typesets without a network."""
    if exc is not None or app.builder.format != "html":
        return
    import jupyter_server_mathjax
    from sphinx.util.fileutil import copy_asset

    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    copy_asset(str(source), str(Path(app.outdir) / "_static" / "mathjax"))


def _tables_rendered(app: Any, exc: Exception | None) -> None:
    """Fail the build on a Markdown table that rendered as a paragraph of pipes (-W does not see
    it: to Sphinx it is a valid paragraph)."""
    if exc is not None or app.builder.format != "html":
        return
    import re

    from sphinx.errors import ExtensionError

    pipes = re.compile(r"<p>\s*\|[^<]*\|[^<]*(?:-{3}|\n\|)", re.S)
    bad = [
        str(page.relative_to(app.outdir))
        for page in sorted(Path(app.outdir).rglob("*.html"))
        if pipes.search(page.read_text(encoding="utf-8"))
    ]
    if bad:
        raise ExtensionError(
            "a Markdown table did not render (a paragraph of pipes) in: " + ", ".join(bad)
        )


_STEP_KEYS = frozenset(
    {"name", "id", "if", "uses", "run", "with", "env", "shell", "continue-on-error"}
    | {"timeout-minutes", "working-directory"}
)


def _workflow_problems(doc: Any) -> list[str]:
    """What is wrong with a GitHub Actions workflow's steps: unknown keys, a step with neither or
    both of ``uses`` and ``run``, a multi-line ``name``/``uses``/``if``, an ``if`` with an odd
    number of quotes. (YAML lets a single-quoted scalar run on over lines, so a workflow with an
    unterminated quote can still parse: its next steps become part of a string.)"""
    if not isinstance(doc, dict) or "jobs" not in doc:
        return []
    out = []
    for job_name, job in (doc.get("jobs") or {}).items():
        for k, step in enumerate((job or {}).get("steps") or []):
            where = f"jobs.{job_name}.steps[{k}]"
            if not isinstance(step, dict):
                out.append(f"{where} is not a mapping")
                continue
            unknown = sorted(set(step) - _STEP_KEYS)
            if unknown:
                out.append(f"{where} has unknown keys {unknown}")
            if ("uses" in step) == ("run" in step):
                out.append(f"{where} needs exactly one of 'uses' and 'run'")
            for key in ("name", "uses", "if"):
                value = str(step.get(key, ""))
                if "\n" in value:
                    out.append(f"{where}.{key} spans lines (an unterminated quote?)")
            if str(step.get("if", "")).count("'") % 2:
                out.append(f"{where}.if has an odd number of quotes")
    return out


def _yaml_blocks_parse(app: Any) -> None:
    """Fail the build on a ```yaml example that is not valid YAML, or a workflow whose steps are
    malformed (a CI workflow a reader copies must work: an unterminated quote once went
    unnoticed)."""
    import re

    import yaml
    from sphinx.errors import ExtensionError

    fence = re.compile(r"^```ya?ml\s*\n(.*?)^```", re.S | re.M)
    bad = []
    for page in sorted(Path(app.srcdir).rglob("*.md")):
        if "_build" in page.parts:
            continue
        for block in fence.findall(page.read_text(encoding="utf-8")):
            where = str(page.relative_to(app.srcdir))
            try:
                doc = yaml.safe_load(block)
            except yaml.YAMLError as err:
                bad.append(f"{where}: {err}".replace("\n", " "))
                continue
            bad += [f"{where}: {problem}" for problem in _workflow_problems(doc)]
    if bad:
        raise ExtensionError("a YAML example does not parse: " + "; ".join(bad))


def setup(app: Any) -> None:
    app.connect("autodoc-process-docstring", _data_docstring)
    app.connect("builder-inited", _claim_pages)
    app.connect("builder-inited", _yaml_blocks_parse)
    app.connect("build-finished", _offline_assets)
    app.connect("build-finished", _tables_rendered)
