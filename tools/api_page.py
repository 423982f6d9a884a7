"""Write ``book/api.md``, the API reference: a section per public module of ``dltricks``, from its docstrings.

    python tools/api_page.py          # rewrite book/api.md
    python tools/api_page.py --check  # exit 1 if book/api.md is out of date (a test runs this)

Sphinx autodoc renders each module's docstring and public members (Google-style sections through napoleon).
A module is public when neither it nor a package above it starts with an underscore.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "companion" / "dltricks"
PAGE = ROOT / "book" / "api.md"

# The Jupytext header JupyterLab writes when the page is saved there (the lab opens Markdown as a notebook and
# names its kernel): with it the page comes back byte-identical (tests/test_lab.py).
FRONT_MATTER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

"""

HEADER = (
    FRONT_MATTER
    + """(chap-api)=
# API reference

Every public module of the companion package `dltricks`, generated from its docstrings: what each function
takes (shapes, units, defaults), what it raises, and the paper or framework convention it follows. The
chapters show the source of the pieces they teach; this page lists everything. Regenerate it with
`python tools/api_page.py` after adding a module (a test checks that it is up to date).
"""
)


def public_modules(package: Path = PACKAGE) -> list[str]:
    """Dotted names of the package's public modules, sorted (packages by their ``__init__``)."""
    names = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") for p in parts) or len(parts) == 1:
            continue
        names.append(".".join(parts))
    return sorted(names)


def render(modules: list[str]) -> str:
    sections = []
    for name in modules:
        label = name.replace(".", "-")
        # autodoc writes reStructuredText, so the directive runs inside eval-rst (MyST would show it raw).
        # Each object is documented where it is defined (ignore-module-all): a package's __all__ re-exports
        # would otherwise document it twice and make cross-references ambiguous.
        directive = f"```{{eval-rst}}\n.. automodule:: {name}\n   :members:\n   :ignore-module-all:\n```\n"
        sections.append(f"({label})=\n## `{name}`\n\n{directive}")
    return HEADER + "\n" + "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="fail if the page is out of date")
    args = ap.parse_args(argv)
    text = render(public_modules())
    if args.check:
        current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
        if current != text:
            print(f"{PAGE} is out of date: run python tools/api_page.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE} ({len(public_modules())} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
