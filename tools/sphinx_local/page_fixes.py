"""A local Sphinx extension with two fixes to what Jupyter Book 1 puts on every page.

1. **One copy of each inline script.** sphinx-thebe's configuration script (``const THEBE_JS_URL = ...``)
   reaches the page twice, and the second ``const`` declaration is a JavaScript error on every page.
   Scripts with identical attributes and bodies are kept once.
2. **Maths without a network.** When the build found a local MathJax (``_static/mathjax``, staged by
   ``tools/build_book.py`` from the official npm package), pages load it instead of the CDN, so maths renders
   in a book built and read offline.
"""

from __future__ import annotations

from pathlib import Path


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    seen, kept = set(), []
    for script in context.get("script_files", []):
        attributes = getattr(script, "attributes", {})
        # An inline script's filename is None or "" depending on who added it: both mean "no file".
        key = (str(getattr(script, "filename", script) or ""), tuple(sorted(attributes.items())))
        if key in seen:
            continue
        seen.add(key)
        kept.append(script)
    context["script_files"] = kept


def _local_mathjax(app, config):
    local = Path(app.srcdir) / "_static" / "mathjax" / "tex-mml-chtml.js"
    if local.exists():
        config.mathjax_path = "mathjax/tex-mml-chtml.js"  # relative to _static


def setup(app):
    app.connect("config-inited", _local_mathjax)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
