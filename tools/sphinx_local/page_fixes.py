"""A local Sphinx extension with three additions to what Jupyter Book 1 puts on every page.

1. **One copy of each inline script.** sphinx-thebe's configuration script (``const THEBE_JS_URL = ...``)
   reaches the page twice, and the second ``const`` declaration is a JavaScript error on every page.
   Scripts with identical attributes and bodies are kept once.
2. **Maths without a network.** When the build found a local MathJax (``_static/mathjax``, staged by
   ``tools/build_book.py`` from the official npm package), pages load it instead of the CDN, so maths renders
   in a book built and read offline.
3. **From the code shown to its reference.** Every block that shows the package's source
   (``literalinclude`` of ``companion/dltricks/...``) is followed by a link to that module's section of the
   API reference (``book/api.md``, labels ``dltricks-<module>``).
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


def _link_to_api(app, doctree, docname):
    """After references are resolved (so every label of the API page is known): link each shown source."""
    from docutils import nodes

    labels = app.env.domaindata["std"]["labels"]
    for block in list(doctree.findall(nodes.literal_block)):
        source = str(block.get("source", ""))
        if "/companion/dltricks/" not in source or not source.endswith(".py") or docname == "book/api":
            continue
        rel = source.split("/companion/", 1)[1].removesuffix(".py").removesuffix("/__init__")
        label = rel.replace("/", "-")
        if label not in labels:
            continue  # a module the reference does not list (private): no link rather than a broken one
        target_doc, anchor, _ = labels[label]
        uri = app.builder.get_relative_uri(docname, target_doc) + "#" + anchor
        ref = nodes.reference("", "", nodes.literal(text=rel.replace("/", ".")), refuri=uri, internal=True)
        para = nodes.paragraph("", "", nodes.Text("API reference: "), ref, classes=["api-link"])
        block.parent.insert(block.parent.index(block) + 1, para)


def setup(app):
    app.connect("config-inited", _local_mathjax)
    app.connect("doctree-resolved", _link_to_api)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
