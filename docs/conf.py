"""Sphinx configuration of the documentation site: ``sphinx-build -W -b html docs docs/_build/html``.

The user guide is the Markdown pages of this folder (MyST); the API reference
is generated from the docstrings (autosummary and numpydoc); the gallery runs
``examples/plot_*.py`` and keeps their figures (sphinx-gallery). The build is
offline: no intersphinx inventories are fetched, so references to other
projects' names (NumPy's, scikit-learn's, Keras's) cannot resolve and are
ignored by ``nitpick_ignore_regex`` below, while every reference to this
library's own API must resolve (``nitpicky``, warnings as errors).
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")
# The examples save their figures where this says (default: the working directory, which
# sphinx-gallery makes examples/): into the build, never into the source tree.
os.environ.setdefault("SKLEARN_IMGRETRIEVAL_FIGURES", str(ROOT / "docs" / "_build" / "example-figures"))

from sklearn_imgretrieval import __version__  # noqa: E402

project = "sklearn-imgretrieval"
author = "the sklearn-imgretrieval developers"
copyright = "the sklearn-imgretrieval developers"
version = release = __version__

root_doc = "site"
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = [
    "_build",
    "sg_execution_times.rst",
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    "auto_examples/*.zip",
]
templates_path = ["_templates"]

# ------------------------------------------------------------------ MyST
myst_heading_anchors = 3  # the pages link to each other's sections (page.md#a-heading)
suppress_warnings = ["myst.xref_missing"] if os.environ.get("DOCS_LENIENT") else []

# ------------------------------------------------------ API reference
autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}
autodoc_typehints = "none"  # the numpydoc sections say the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# Every public docstring is checked (numpydoc's validation): a missing Parameters or Returns
# section, an undocumented parameter, a summary that is not one line. See tests for the list.
numpydoc_validation_checks = {"PR01", "PR02", "RT01", "SS01", "GL08"}
numpydoc_validation_exclude = {r"\.__init__$", r"\.__sklearn_tags__$", r"\.__sklearn_clone__$"}
# Result objects that the library makes and users read (dataclasses): their fields are documented
# under Attributes, as scikit-learn documents a Bunch; users do not construct them.
numpydoc_validation_overrides = {"PR01": [r"^Near-duplicate images found by", r"^What :meth:`ImageIndex.update` did"]}

nitpicky = True
# Offline: other projects' names cannot resolve. This library's own names must.
nitpick_ignore_regex = [(r"py:.*", r"(?!sklearn_imgretrieval\b).*"), (r"py:.*", r"sklearn_imgretrieval\..*\._.*")]


def _skip_metadata_request_setters(app, what, name, obj, skip, options):
    """scikit-learn's generated ``set_*_request`` methods: documented by scikit-learn, not here."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_metadata_request_setters)


# ------------------------------------------------------------- gallery
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": True,
    "plot_gallery": os.environ.get("DOCS_PLOT_GALLERY", "True"),
}

# ------------------------------------------------------------------ HTML
html_theme = "pydata_sphinx_theme"
html_title = f"sklearn-imgretrieval {version}"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
html_static_path = []
