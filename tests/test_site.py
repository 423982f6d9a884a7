"""The rendered book: every chapter, figure and glued number is in the HTML."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

import build_book

pytestmark = pytest.mark.book
ROOT = Path(__file__).resolve().parents[1]


def toc_files():
    return build_book.toc_files(ROOT / "_toc.yml")


def page(built_book, f):
    return (built_book / "html" / f"{f}.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("f", toc_files())
def test_every_page_is_rendered(built_book, f):
    text = page(built_book, f)
    title = next(line for line in (ROOT / f"{f}.md").read_text().splitlines() if line.startswith("# "))[2:]
    assert html.escape(title, quote=False) in text or title in html.unescape(text)


# Figures each chapter draws (a lower bound: a chapter that loses a figure fails here).
MIN_FIGURES = {
    "generalization": 7,
    "dropout": 5,
    "gradients": 5,
    "optimizers": 6,
    "recipe": 3,
    "distillation": 4,
    "gpu": 5,
    "transfer": 3,
}


@pytest.mark.parametrize("chapter", sorted(MIN_FIGURES))
def test_chapter_figures_are_present(built_book, chapter):
    text = page(built_book, f"book/{chapter}")
    sources = re.findall(r'<img[^>]+src="([^"]+)"', text)
    figures = [s for s in sources if "_images" in s]
    assert len(figures) >= MIN_FIGURES[chapter], sources
    for src in figures:
        assert (built_book / "html" / "book" / src).resolve().exists(), src


@pytest.mark.parametrize("chapter", sorted(MIN_FIGURES))
def test_every_glued_number_is_in_the_html(built_book, results, chapter):
    source = (ROOT / "book" / f"{chapter}.md").read_text()
    keys = sorted(set(re.findall(r"\{glue:text\}`([^`:]+)`", source)))
    assert len(keys) > 20
    data = results(chapter)["results"]
    # Sphinx's smart quotes turn a glued "rule's" into "rule’s" on the page.
    text = html.unescape(page(built_book, f"book/{chapter}")).replace("\u2019", "'").replace("\u2018", "'")
    text = text.replace("\u201c", '"').replace("\u201d", '"')  # and a glued "not sure" into “not sure”
    missing = [k for k in keys if data[k]["text"] not in text]
    assert not missing, {k: data[k]["text"] for k in missing}
    assert "glue:text" not in text and "pending" not in text.lower()


def test_every_notebook_chapter_has_a_figure_count():
    chapters = {Path(f).name for f in toc_files() if build_book.is_notebook(ROOT / f"{f}.md")} - {"report"}
    assert chapters == set(MIN_FIGURES)


@pytest.mark.parametrize("chapter", sorted(MIN_FIGURES))
def test_execution_report_lists_every_chapter(built_book, results, chapter):
    text = html.unescape(page(built_book, "book/report"))
    run = results(chapter)
    rows = [r for r in text.split("<tr")[1:] if re.search(rf'href="{chapter}\.html"', r)]  # its linked title
    assert len(rows) == 1, f"expected one report row for {chapter}"
    row = rows[0]
    assert run["profile"] in row and run["commit"] in row
    # Where the results came from: executed by this build, or restored from the build cache.
    assert ("this build" if run["build"]["source"] == "executed" else "cache") in row
    assert f"torch {run['versions']['torch']}" in text  # the versions follow the table


def test_code_is_shown_from_the_package(built_book):
    text = html.unescape(page(built_book, "book/generalization"))
    for needle in ("def kfold_indices(", "def l2_penalty(", "def soft_threshold_(", "def mlp("):
        assert needle in re.sub(r"<[^>]+>", "", text), needle
