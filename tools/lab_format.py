"""Rewrite book pages exactly as a save from JupyterLab would (Jupytext, with jupytext.toml).

    python tools/lab_format.py [PAGE.md ...]     # default: every page of _toc.yml

A page edited by hand (a figure caption wrapped over several lines, say) comes back from the lab in
Jupytext's own layout, so opening and saving it there would show as a change in git. Running this after
editing keeps every page byte-identical to what the lab writes (tests/test_lab.py checks it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import jupytext
from jupytext.config import find_jupytext_configuration_file, load_jupytext_configuration_file
from jupytext.formats import long_form_one_format

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import build_book  # noqa: E402

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def lab_text(path: Path) -> str:
    """The text JupyterLab's Jupytext contents manager writes when ``path`` is saved from the lab."""
    config = load_jupytext_configuration_file(find_jupytext_configuration_file(str(path.parent)))
    fmt = long_form_one_format("md:myst")
    config.set_default_format_options(fmt)
    nb = jupytext.reads(path.read_text(encoding="utf-8"), fmt="md:myst")
    nb.metadata.setdefault("kernelspec", dict(KERNELSPEC))  # the lab names the kernel it started
    # ... and records what the kernel reports (which marks the tab as modified the moment it connects);
    # Jupytext leaves it out of the text file, so a save changes nothing.
    nb.metadata.setdefault("language_info", {"name": "python", "mimetype": "text/x-python"})
    return jupytext.writes(nb, fmt=fmt)


def main(argv: list[str]) -> int:
    pages = [Path(a) for a in argv] or [ROOT / f"{f}.md" for f in build_book.toc_files(ROOT / "_toc.yml")]
    for page in pages:
        text = lab_text(page)
        if text != page.read_text(encoding="utf-8"):
            page.write_text(text, encoding="utf-8")
            print(f"rewrote {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
