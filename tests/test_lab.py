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


def _shared_requirements(remote_entry: str) -> list[tuple[str, str]]:
    """(package, range) for every @jupyterlab/@lumino module a prebuilt extension takes from the lab.

    Two bundle formats: module federation's ``shareKey:"@jupyterlab/x",...requiredVersion:"^4.7.0-beta.0"``
    and webpack 5's ``("default","@jupyterlab/x",!1,[1,4,5,9])`` (``[k, a, b, c]``: at least a.b.c with the
    first k parts equal, so ``[1, ...]`` is a caret range).
    """
    found = [
        (m[1], m[2])
        for m in re.finditer(
            r'shareKey:"(@(?:jupyterlab|lumino)/[\w-]+)",[^}]*?requiredVersion:"([^"]+)"', remote_entry
        )
    ]
    for m in re.finditer(r'"default","(@(?:jupyterlab|lumino)/[\w-]+)",!\d,\[(\d+(?:,\d+)+)\]', remote_entry):
        fixed, *parts = (int(p) for p in m[2].split(","))
        found.append((m[1], f"webpack:{fixed}:{'.'.join(map(str, parts))}"))
    return found


def _satisfies(version: str, required: str) -> bool:
    from packaging.version import Version

    have = Version(version)
    if required.startswith("webpack:"):
        _, fixed, low = required.split(":")
        low_v = Version(low)
        return have >= low_v and have.release[: int(fixed)] == low_v.release[: int(fixed)]
    if required.startswith("^"):
        low_v = Version(required[1:])
        major = low_v.release[0]
        return have >= low_v and (
            have.release[0] == major if major else have.release[:2] == low_v.release[:2]
        )
    if required.startswith("~"):
        low_v = Version(required[1:])
        return have >= low_v and have.release[:2] == low_v.release[:2]
    return True  # an exact or other range: not used by these extensions


def test_every_lab_extension_gets_the_lab_modules_it_was_built_for():
    """An extension built against a newer JupyterLab lists as "enabled OK" and then fails to load in the
    browser ("Failed to create module"): jupytext 1.19.5+ needs JupyterLab 4.6, which this project cannot
    use yet (see pyproject.toml), and without its extension a chapter's .md opens in the text editor.
    Compares each prebuilt extension's required versions with the versions this JupyterLab ships."""
    import json

    import jupyterlab

    shipped = json.loads((Path(jupyterlab.__file__).parent / "static" / "package.json").read_text())
    versions = {name: spec.lstrip("~^") for name, spec in shipped["resolutions"].items()}
    extensions = Path(sys.prefix) / "share" / "jupyter" / "labextensions"
    checked, problems = 0, []
    for name in ("jupyterlab-jupytext", "jupyterlab-myst"):
        entries = list((extensions / name / "static").glob("remoteEntry.*.js"))
        assert entries, f"{name} is not installed as a prebuilt extension in {extensions}"
        for package, required in _shared_requirements(entries[0].read_text(encoding="utf-8")):
            if package in versions:
                checked += 1
                if not _satisfies(versions[package], required):
                    problems.append(
                        f"{name} needs {package} {required}, JupyterLab ships {versions[package]}"
                    )
    assert checked >= 5, "no shared module requirements found: has the bundle format changed?"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("version", "required", "ok"),
    [
        ("4.6.11", "^4.7.0-beta.0", False),
        ("4.6.11", "webpack:1:4.5.9", True),
        ("4.5.11", "^4.6.0-beta.0", False),
        ("4.5.11", "^4.4.9", True),
        ("5.0.0", "^4.4.9", False),
        ("2.7.0", "~2.7.1", False),
    ],
)
def test_the_version_check_reads_ranges_as_npm_does(version, required, ok):
    assert _satisfies(version, required) is ok
