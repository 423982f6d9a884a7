"""Chapters opened and saved in JupyterLab come back unchanged; the lab's kernel is the one they name."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import jupytext
import lab_format
import pytest

import build_book

ROOT = Path(__file__).resolve().parents[1]
PAGES = build_book.toc_files(ROOT / "_toc.yml")
CHAPTERS = [f for f in PAGES if build_book.is_notebook(ROOT / f"{f}.md")]


@pytest.mark.parametrize("page", PAGES)
def test_a_save_from_the_lab_leaves_every_page_byte_identical(page):
    """What Jupytext's contents manager does on save (tools/lab_format.py: read the text notebook, write it
    with jupytext.toml). The lab opens every Markdown page as a notebook and starts the kernel, whose spec
    the save writes: plain pages too. After a hand edit, `python tools/lab_format.py` fixes the layout."""
    path = ROOT / f"{page}.md"
    assert lab_format.lab_text(path) == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("chapter", PAGES)
def test_the_chapter_names_the_kernel_make_install_registers(chapter):
    nb = jupytext.read(ROOT / f"{chapter}.md")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    registered = re.search(r'ipykernel install .*--name (\S+) --display-name "([^"]+)"', makefile)
    assert registered, "the Makefile registers the lab's kernel"
    assert nb.metadata["kernelspec"]["name"] == registered.group(1)
    assert nb.metadata["kernelspec"]["display_name"] == registered.group(2)


def test_the_lab_loads_its_extensions_myst_included():
    """jupyterlab-myst renders the chapters' roles and directives ({cite}, admonitions) in the lab; a
    JupyterLab it is incompatible with installs it but disables it, which only this listing shows."""
    jupyter = Path(sys.executable).with_name("jupyter")
    out = subprocess.run([str(jupyter), "labextension", "list"], capture_output=True, text=True, timeout=120)
    listing = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)  # without the colors
    assert "not compatible" not in listing, listing
    for extension in ("jupyterlab-myst", "jupyterlab-jupytext"):
        assert re.search(rf"{extension} v\S+ enabled OK", listing), listing
