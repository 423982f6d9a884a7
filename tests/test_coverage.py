"""The coverage appendix: every technique of COVERAGE.md has a row, and every written chapter's rows link
to a section that exists."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTER_FILES = {
    "GEN": "book/generalization",
    "DROP": "book/dropout",
    "GRAD": "book/gradients",
    "OPT": "book/optimizers",
    "TL": "book/transfer",
    "KD": "book/distillation",
    "GPU": "book/gpu",
    "RECIPE": "book/recipe",
}


def _table(header: str) -> list[list[str]]:
    lines = (ROOT / "book" / "coverage.md").read_text().splitlines()
    start = lines.index(header)
    body = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        body.append([c.strip() for c in line.strip().strip("|").split(" | ")])
    return body


def rows():
    """(number, technique, source, chapters, section) for every row of the main table."""
    return [tuple(r) for r in _table("| # | technique | source | chapter | section |")]


def where_rows():
    """(number, section, code, tests) for every row of the generated code-and-tests table."""
    return [tuple(r) for r in _table("| # | section | code | tests |")]


def labels():
    found = set()
    for md in (ROOT / "book").glob("*.md"):
        found |= set(re.findall(r"^\((.+?)\)=\s*$", md.read_text(), flags=re.M))
    return found


def test_all_67_techniques_have_a_row():
    assert [int(r[0]) for r in rows()] == list(range(1, 68))


def test_rows_of_written_chapters_link_to_existing_sections():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    in_toc = {c["file"] for part in toc["parts"] for c in part["chapters"]}
    known = labels()
    for number, technique, _, chapters, section in rows():
        written = [k for k in re.findall(r"[A-Z]+", chapters) if CHAPTER_FILES.get(k) in in_toc]
        refs = re.findall(r"\{ref\}`([^`]+)`", section)
        if written:
            assert refs, f"row {number} ({technique}) belongs to a written chapter but has no section link"
        for ref in refs:
            assert ref in known, f"row {number} links to unknown label {ref}"


def test_code_and_tests_columns_name_files_that_exist_and_are_up_to_date():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "coverage_table.py"), "--check"], capture_output=True
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert [r[0] for r in where_rows()] == [r[0] for r in rows()]
    for number, _, code, tests in where_rows():
        for module in re.findall(r"`([\w/]+)`", code):
            assert (ROOT / "companion" / "dltricks" / f"{module}.py").exists(), (number, module)
        for test in re.findall(r"`([\w.]+)`", tests):
            assert (ROOT / "tests" / test).exists(), (number, test)
