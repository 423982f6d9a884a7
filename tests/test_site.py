"""The rendered book: every chapter, figure and glued number is in the HTML."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.book
ROOT = Path(__file__).resolve().parents[1]


def toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part["chapters"]]
    return files


def page(built_book, f):
    return (built_book / "html" / f"{f}.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("f", toc_files())
def test_every_page_is_rendered(built_book, f):
    text = page(built_book, f)
    title = next(line for line in (ROOT / f"{f}.md").read_text().splitlines() if line.startswith("# "))[2:]
    assert html.escape(title, quote=False) in text or title in html.unescape(text)


def test_generalization_figures_are_present(built_book):
    text = page(built_book, "book/generalization")
    sources = re.findall(r'<img[^>]+src="([^"]+)"', text)
    figures = [s for s in sources if "_images" in s]
    assert len(figures) >= 7, sources
    for src in figures:
        assert (built_book / "html" / "book" / src).resolve().exists(), src


def test_every_glued_number_is_in_the_html(built_book, results):
    source = (ROOT / "book" / "generalization.md").read_text()
    keys = sorted(set(re.findall(r"\{glue:text\}`([^`:]+)`", source)))
    assert len(keys) > 40
    data = results("generalization")["results"]
    text = html.unescape(page(built_book, "book/generalization"))
    missing = [k for k in keys if data[k]["text"] not in text]
    assert not missing, {k: data[k]["text"] for k in missing}
    assert "glue:text" not in text and "pending" not in text.lower()


def test_execution_report_lists_every_chapter(built_book, results):
    text = html.unescape(page(built_book, "book/report"))
    gen = results("generalization")
    assert "generalization" in text
    assert gen["profile"] in text and gen["commit"] in text and gen["versions"]["torch"] in text


def test_code_is_shown_from_the_package(built_book):
    text = html.unescape(page(built_book, "book/generalization"))
    for needle in ("def kfold_indices(", "def l2_penalty(", "def soft_threshold_(", "def mlp("):
        assert needle in re.sub(r"<[^>]+>", "", text), needle
