"""The API reference page lists every public module and renders their docstrings."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

import api_page

ROOT = Path(__file__).resolve().parents[1]


def test_the_api_page_is_up_to_date_with_the_package():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "api_page.py"), "--check"], capture_output=True
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert "dltricks.compare" in api_page.public_modules() and "dltricks.train" in api_page.public_modules()
    assert not [m for m in api_page.public_modules() if "._" in m]


@pytest.mark.book
def test_the_rendered_reference_shows_signatures_and_raises_sections(built_book):
    text = html.unescape((built_book / "html" / "book" / "api.html").read_text(encoding="utf-8"))
    plain = re.sub(r"<[^>]+>", "", text)
    for needle in ("compare_paired", "record_comparison", "limit_threads", "fit("):
        assert needle in plain, needle
    assert "Raises" in plain and "Returns" in plain


@pytest.mark.book
def test_shown_source_links_to_its_api_section(built_book):
    """Every chapter that shows package source links each block to the module's section of the reference."""
    html_dir = built_book / "html" / "book"
    text = (html_dir / "transfer.html").read_text(encoding="utf-8")
    assert 'href="api.html#dltricks-transfer-freeze"' in text
    api = (html_dir / "api.html").read_text(encoding="utf-8")
    for anchor in set(re.findall(r'href="api\.html#([\w-]+)"', text)):
        assert f'id="{anchor}"' in api, anchor
