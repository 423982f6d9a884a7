"""Every page of the built book, opened in a real browser (Debian's Chromium, driven by Selenium).

Each page is served from a local HTTP server, as a reader's browser would get it, and fails on what a reader
would see go wrong: a console error, an image that did not load, maths left as raw LaTeX, library logs or
bare values printed under a cell, a table wider than the content column. Internal links (page and anchor)
are checked from the HTML of every page. At a laptop's and a desktop's width (1280 and 1920 px) every code
line fits its block, no block scrolls sideways, and every table (the general index's too) fits the column.

`.ci/run` installs `chromium` and `chromium-driver` from Debian; elsewhere the test skips when they are
missing, except under CI, where a missing browser is a failure.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import pytest

pytestmark = pytest.mark.book

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("CI"):
        pytest.fail("CI must install Debian's chromium and chromium-driver (see .ci/run)", pytrace=False)
    pytest.skip("Chromium and ChromeDriver are not installed", allow_module_level=True)

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402

# Output text that is plumbing, not content: a recording call's return value, papermill's injected cell,
# TensorFlow's start-up log lines.
STRAY = re.compile(
    r"np\.float64\(|np\.int64\(|injected-parameters|oneDNN custom operations|absl::InitializeLog"
)


@pytest.fixture(scope="module")
def site(built_book: Path):
    html = built_book / "html"

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # one line per request would flood the test log
            pass

    handler = functools.partial(Quiet, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield html, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # The flags that keep Chromium from reaching for Google's services on a closed network.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,900"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


# Measures the code blocks and tables of the open page; a JSON string. Hidden cells are opened first (a
# reader may open them). A line is too wide when its rendered width (the block's own font, measured on a
# canvas) exceeds the block's inner width: with the book's CSS a long cell line wraps instead of scrolling,
# so a scroll bar alone would miss it. A block scrolls when it, or a wrapper up to the article, overflows.
CODE_FIT_JS = """
const art = document.querySelector('article.bd-article') || document.body;
for (const d of art.querySelectorAll('details')) d.open = true;
const ctx = document.createElement('canvas').getContext('2d');
const out = {wide: [], scrolls: [], tables: [], lines: 0};
for (const pre of art.querySelectorAll('pre')) {
  if (!pre.offsetParent) continue;
  const cs = getComputedStyle(pre);
  ctx.font = `${cs.fontStyle} ${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;
  const inner = pre.clientWidth - (parseFloat(cs.paddingLeft) || 0) - (parseFloat(cs.paddingRight) || 0);
  const output = pre.closest('.cell_output, .output') !== null;
  for (const line of pre.textContent.replace(/\\n$/, '').split('\\n')) {
    out.lines += output ? 0 : 1;
    if (!output && ctx.measureText(line.replace(/\\t/g, '        ')).width > inner + 0.5)
      out.wide.push(line.length + ' chars: ' + line.trim().slice(0, 70));
  }
  for (let el = pre; el && el !== art; el = el.parentElement) {
    if (['auto', 'scroll'].includes(getComputedStyle(el).overflowX) && el.scrollWidth > el.clientWidth + 1) {
      out.scrolls.push(el.scrollWidth + ' > ' + el.clientWidth + ' px: ' + pre.textContent.slice(0, 60));
      break;
    }
  }
}
const right = art.getBoundingClientRect().right;
for (const t of art.querySelectorAll('table'))
  if (t.scrollWidth > t.parentElement.clientWidth + 1 || t.getBoundingClientRect().right > right + 1)
    out.tables.push(t.innerText.slice(0, 60));
return JSON.stringify(out);
"""


def pages(html: Path) -> list[str]:
    return sorted(str(p.relative_to(html)) for p in (html / "book").glob("*.html"))


def test_every_page_reads_cleanly_in_a_browser(site, browser):
    html, base = site
    problems: list[str] = []
    for page in pages(html):
        browser.get(base + page)
        # Wait until MathJax (if the page has maths) has typeset everything.
        browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "if (window.MathJax && MathJax.startup) { MathJax.startup.promise.then(() => done(true)); }"
            "else { setTimeout(() => done(false), 500); }"
        )
        for entry in browser.get_log("browser"):
            if entry["level"] == "SEVERE":
                problems.append(f"{page}: console error: {entry['message'][:200]}")
        broken = browser.execute_script(
            "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src);"
        )
        problems += [f"{page}: image did not load: {src}" for src in broken]
        raw_math = browser.execute_script(
            "return [...document.querySelectorAll('.math, span.math, div.math')]"
            ".filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 60));"
        )
        problems += [f"{page}: maths not typeset: {m!r}" for m in raw_math]
        outputs = browser.execute_script(
            "return [...document.querySelectorAll('.cell_output, .output')].map(o => o.innerText);"
        )
        problems += [f"{page}: stray output: {o[:80]!r}" for o in outputs if STRAY.search(o)]
        # A table is too wide when it needs a horizontal scroll bar in its container, or reaches past the
        # content column (the reader would not see its last columns).
        wide = browser.execute_script(
            "const col = document.querySelector('article.bd-article') || document.body;"
            "const right = col.getBoundingClientRect().right;"
            "return [...col.querySelectorAll('table')]"
            ".filter(t => t.scrollWidth > t.parentElement.clientWidth + 1"
            " || t.getBoundingClientRect().right > right + 1)"
            ".map(t => t.innerText.slice(0, 60));"
        )
        problems += [f"{page}: table wider than the column: {t!r}" for t in wide]
    assert not problems, "\n".join(problems)


def test_internal_links_reach_their_page_and_anchor(site):
    html, _ = site
    ids: dict[Path, set[str]] = {}

    def anchors(path: Path) -> set[str]:
        if path not in ids:
            ids[path] = set(re.findall(r'\sid="([^"]+)"', path.read_text(encoding="utf-8")))
        return ids[path]

    problems = []
    for page in pages(html):
        path = html / page
        for href in re.findall(r'<a [^>]*href="([^"]+)"', path.read_text(encoding="utf-8")):
            if urlparse(href).scheme or href.startswith(("mailto:", "javascript:")):
                continue
            target, fragment = urldefrag(urljoin(page, unquote(href)))
            target_path = html / target if target else path
            if target and not target_path.exists():
                problems.append(f"{page}: link to a missing page {href}")
            elif fragment and target_path.suffix == ".html" and fragment not in anchors(target_path):
                problems.append(f"{page}: link to a missing anchor {href}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("width", [1280, 1920])
def test_code_and_tables_fit_the_column(site, browser, width):
    """Issue 26: at a laptop's and a desktop's width no code line is wider than its block (cells, included
    package source, code fences), no block scrolls sideways and every table fits, on every page and the
    general index. Phone widths may scroll."""
    import json

    html, base = site
    problems: list[str] = []
    lines = 0
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        for page in [*pages(html), "genindex.html"]:
            browser.get(base + page)
            browser.execute_async_script(
                "const done = arguments[arguments.length - 1]; document.fonts.ready.then(() => done(true));"
            )
            found = json.loads(browser.execute_script(CODE_FIT_JS))
            lines += found["lines"]
            problems += [f"{width} px {page}: code line wider than its block: {w}" for w in found["wide"]]
            problems += [f"{width} px {page}: block scrolls sideways: {w}" for w in found["scrolls"]]
            problems += [f"{width} px {page}: table wider than the column: {t!r}" for t in found["tables"]]
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert lines > 0, "no code measured: the page layout changed?"
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems)
