"""Every figure of the book is legible at column width, captioned and numbered (issue 15).

A PNG wider than the content column is shrunk to it, and its text with it. ``dltricks.plotting`` sets one
style (sizes in points, 144 dpi) and states the column width and the smallest readable text; these tests
check every figure the built chapters show against them, and that each has a caption and a name (Jupyter
Book numbers named figures: "Fig. 3").
"""

from __future__ import annotations

import base64
import re
import struct
from pathlib import Path

import nbformat
import pytest

from dltricks.plotting import MIN_FONT_PT, STYLE, max_figure_px

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(
    p for p in (ROOT / "book").glob("*.md") if "```{code-cell}" in p.read_text(encoding="utf-8")
)


def png_size_and_dpi(data: bytes) -> tuple[int, float]:
    """Width in pixels and dots per inch of a PNG (its pHYs chunk; the book's dpi when it has none)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width = struct.unpack(">I", data[16:20])[0]
    dpi = float(STYLE["figure.dpi"])
    pos = 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"pHYs":
            ppu_x, _, unit = struct.unpack(">IIB", data[pos + 8 : pos + 17])
            if unit == 1:  # pixels per metre
                dpi = ppu_x * 0.0254
            break
        if kind == b"IDAT":
            break
        pos += 12 + length
    return width, dpi


def test_png_size_and_dpi_reads_what_matplotlib_writes(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(5, 2), dpi=144)
    fig.savefig(tmp_path / "f.png", dpi=144)
    plt.close(fig)
    width, dpi = png_size_and_dpi((tmp_path / "f.png").read_bytes())
    assert width == 720 and dpi == pytest.approx(144, abs=0.1)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_no_chapter_asks_for_text_smaller_than_the_style_allows(chapter):
    small = [
        f"{chapter.name}:{n}: {line.strip()}"
        for n, line in enumerate(chapter.read_text(encoding="utf-8").splitlines(), 1)
        for size in re.findall(r"fontsize\s*=\s*([0-9.]+)", line)
        if float(size) < MIN_FONT_PT
    ]
    assert not small, f"text below {MIN_FONT_PT} pt:\n" + "\n".join(small)


@pytest.mark.book
def test_every_figure_is_legible_at_column_width_and_captioned(build_dir):
    """Checks the executed chapters of the build (``make test`` builds them; so does ``build_book.py
    --no-html``), chapter by chapter where they exist."""
    built_book = build_dir
    problems, figures = [], 0
    for chapter in CHAPTERS:
        path = built_book / "executed" / "book" / f"{chapter.stem}.ipynb"
        if not path.exists():
            continue
        nb = nbformat.read(path, as_version=4)
        for index, cell in enumerate(nb.cells):
            pngs = [
                o["data"]["image/png"] for o in cell.get("outputs", []) if "image/png" in o.get("data", {})
            ]
            if not pngs or "remove-output" in cell.metadata.get("tags", []):
                continue
            where = f"{chapter.stem}, cell {index + 1} ({cell.source.splitlines()[0][:60]!r})"
            figure = cell.metadata.get("mystnb", {}).get("figure", {})
            if not (figure.get("caption") and figure.get("name")):
                problems.append(f"{where}: no caption and name (cell metadata mystnb.figure)")
            shown = [
                o
                for o in cell.get("outputs", [])
                if o.get("output_type") in ("display_data", "execute_result")
                and not any(k.startswith("application/papermill.record") for k in o.get("data", {}))
            ]
            if figure and len(shown) != 1:  # every other output lands in the figure too, under the same name
                problems.append(f"{where}: {len(shown)} outputs in a numbered figure cell, one expected")
            for png in pngs:
                figures += 1
                width, dpi = png_size_and_dpi(base64.b64decode(png))
                if width > max_figure_px(dpi):
                    problems.append(
                        f"{where}: {width} px wide at {dpi:.0f} dpi ({width / dpi:.1f} in); at most "
                        f"{max_figure_px(dpi):.0f} px keeps {MIN_FONT_PT}-pt text readable in the column"
                    )
    assert figures > 0, f"no figure found under {built_book / 'executed'}"
    assert not problems, f"{len(problems)} problem(s) in {figures} figures:\n" + "\n".join(problems)
