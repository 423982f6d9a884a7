"""Fill the coverage table's *code* and *tests* columns from the chapters: where each technique lives.

    python tools/coverage_table.py          # rewrite the two columns of book/coverage.md
    python tools/coverage_table.py --check  # exit 1 if they are out of date (a test runs this)

For every row, the sections it links to (``{ref}`label```) are looked up in the chapters. The package modules
a section shows (``literalinclude``) or, failing that, imports in its code cells are the row's *code*; the
unit-test file of each module (``tests/test_<module>.py``, or of its package) and the chapter's claim tests
are its *tests*. So a newcomer goes from a technique to its section, its code and its tests in one row.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "coverage.md"
CLAIMS = {
    "generalization": "test_generalization.py",
    "dropout": "test_dropout_chapter.py",
    "gradients": "test_gradients_chapter.py",
    "optimizers": "test_optimizers_chapter.py",
    "recipe": "test_recipe_chapter.py",
    "transfer": "test_transfer_chapter.py",
    "distillation": "test_distillation_chapter.py",
    "gpu": "test_gpu_chapter.py",
}
# Rows whose section teaches a package module it neither shows nor imports by name in that section (the
# optimizers are built once, at the top of their chapter), or imports a helper that is not the technique.
OVERRIDES = {
    1: ["dltricks/diagnostics/overfit"],
    8: ["dltricks/diagnostics/lr_range"],
    13: ["dltricks/preprocess"],
    15: ["dltricks/train"],
    21: ["dltricks/preprocess"],
    22: ["dltricks/preprocess"],
    23: ["dltricks/preprocess"],
    25: ["dltricks/diagnostics/lr_range"],
    27: ["dltricks/models", "dltricks/init"],
    30: ["dltricks/preprocess"],
    33: ["dltricks/diagnostics/overfit"],
    34: ["dltricks/diagnostics/overfit"],
    36: ["dltricks/diagnostics/lr_range"],
    37: ["dltricks/layers"],
    45: ["dltricks/dropout"],
    48: ["dltricks/optim/sgd"],
    49: [
        "dltricks/optim/adagrad",
        "dltricks/optim/rmsprop",
        "dltricks/optim/adadelta",
        "dltricks/optim/adam",
    ],
    51: ["dltricks/transfer/freeze", "dltricks/augment"],
    55: ["dltricks/transfer/freeze"],
    57: ["dltricks/models", "dltricks/init"],
    61: ["dltricks/optim/sgd"],
    62: [f"dltricks/optim/{m}" for m in ("adagrad", "rmsprop", "adam", "nadam")],
    65: ["dltricks/dropout"],
}
_LABEL = re.compile(r"^\(([\w-]+)\)=\s*$", re.MULTILINE)
_INCLUDE = re.compile(r"literalinclude\}\s+\.\./companion/(dltricks/[\w/]+)\.py")
_IMPORT = re.compile(r"^\s*from (dltricks(?:\.\w+)+) import", re.MULTILINE)


def sections() -> dict[str, tuple[str, str]]:
    """Every section label of the chapters: ``label -> (chapter stem, text of the section)``."""
    found = {}
    for md in sorted((ROOT / "book").glob("*.md")):
        text = md.read_text(encoding="utf-8")
        marks = list(_LABEL.finditer(text))
        for i, mark in enumerate(marks):
            end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
            found[mark.group(1)] = (md.stem, text[mark.end() : end])
    return found


def module_of(dotted: str) -> str:
    return dotted.replace(".", "/").removesuffix("/__init__")


def test_file(module: str) -> str | None:
    """``tests/test_<name>.py`` for ``dltricks/<name>.py``, else the test file of its package."""
    parts = module.split("/")[1:]
    for name in (parts[-1], parts[0]):
        if (ROOT / "tests" / f"test_{name}.py").exists():
            return f"test_{name}.py"
    return None


def row_links(number: int, refs: list[str], index: dict[str, tuple[str, str]]) -> tuple[str, str]:
    modules: list[str] = list(OVERRIDES.get(number, []))
    tests: list[str] = []
    for ref in refs:
        if ref not in index:
            continue
        chapter, text = index[ref]
        shown = (
            []
            if number in OVERRIDES
            else _INCLUDE.findall(text) or [module_of(m) for m in _IMPORT.findall(text)]
        )
        for module in shown:
            if module not in modules and (ROOT / "companion" / f"{module}.py").exists():
                modules.append(module)
        claim = CLAIMS.get(chapter)
        if claim and claim not in tests:
            tests.append(claim)
    unit = [t for t in (test_file(m) for m in modules) if t]
    tests = list(dict.fromkeys(unit + tests))
    code = ", ".join(f"`{m.removeprefix('dltricks/')}`" for m in modules[:4]) or "—"
    return code, ", ".join(f"`{t}`" for t in tests) or "—"


MAIN_HEADER = "| # | technique | source | chapter | section |"
WHERE_TITLE = "(coverage-code)=\n## Where each technique's code and tests are"
WHERE_INTRO = (
    "For each row above: the `dltricks` modules (under `companion/dltricks/`) its section teaches with, and\n"
    "the files in `tests/` that check them (the modules' unit tests, then the chapter's claim tests). This\n"
    "table is generated from the chapters by `tools/coverage_table.py`; a test checks it is up to date."
)


def render(page: str) -> str:
    """The page with the main table (``# | technique | source | chapter | section``) as written, followed by
    a generated table ``# | section | code | tests``. Anything after the main table is regenerated."""
    index = sections()
    lines = page.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| # | technique"))
    last = first
    while last + 1 < len(lines) and lines[last + 1].startswith("|"):
        last += 1
    where = ["| # | section | code | tests |", "|---|---|---|---|"]
    for line in lines[first + 2 : last + 1]:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        number, section = cells[0], cells[4]
        refs = re.findall(r"\{ref\}`([\w-]+)`", section)
        code, tests = row_links(int(number), refs, index)
        where.append(f"| {number} | {section} | {code} | {tests} |")
    body = "\n".join(lines[: last + 1])
    return f"{body}\n\n{WHERE_TITLE}\n\n{WHERE_INTRO}\n\n" + "\n".join(where) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="fail if the columns are out of date")
    args = ap.parse_args(argv)
    page = PAGE.read_text(encoding="utf-8")
    text = render(page)
    if args.check:
        if text != page:
            print(f"{PAGE}: the code and tests columns are out of date: run {__file__}", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
