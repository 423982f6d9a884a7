"""Fit the code that the book's pages show to the width of a code block.

    python tools/format_shown_code.py [--check] [--line-length N] [PATH ...]

PATH is a chapter (``book/*.md``: its code cells and the package objects it ``literalinclude``s) or a package
module (``companion/**/*.py``: the whole file). Without a PATH: every chapter. ``--check`` changes nothing
and exits 1 when a shown line is longer than the limit (it lists them); without it, each statement that holds
such a line is reformatted by ruff at the limit, long full-line comments are rewrapped, and what is left
(a long string, a long trailing comment) is listed for a hand edit.

Only the statements with a long line change: the rest keeps its hand-made layout, and every rewritten cell
is checked to have the same syntax tree as before, so a chapter's results cannot change (the build's cache
still sees a changed cell and executes the chapter once).

The limits come from the measured block width (book/_static/dltricks.css, tests/test_browser.py): a code
block holds about 109 characters of a cell and 111 of an included object at 1280 and 1920 px. Cells are fitted
to ``SHOWN_LINE_LENGTH`` (100, leaving room for a wider monospace font than the one measured); the package
objects a chapter ``literalinclude``s are checked against the package's own limit, ``PACKAGE_LINE_LENGTH``
(110, ruff's in pyproject.toml), and are never rewritten from a chapter.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHOWN_LINE_LENGTH = 100
PACKAGE_LINE_LENGTH = 110  # pyproject.toml [tool.ruff] line-length
RUFF = [sys.executable, "-m", "ruff"]
CELL = re.compile(r"(^```\{code-cell\}[^\n]*\n)(.*?)(^```$)", re.S | re.M)
INCLUDE = re.compile(r"^```\{literalinclude\}\s+(\S+)\n((?::[^\n]*\n)*)```", re.M)


def ruff_format(code: str, line_length: int) -> str:
    done = subprocess.run(
        [*RUFF, "format", "--isolated", f"--line-length={line_length}", "-"],
        input=code, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise ValueError(f"ruff could not format:\n{code}\n{done.stderr}")
    return done.stdout


def _statements(tree: ast.AST, lines: list[str]):
    """Statements that ruff can format on their own (an ``elif`` branch is part of its ``if``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt):
            if isinstance(node, ast.If) and lines[node.lineno - 1].lstrip().startswith("elif"):
                continue
            yield node


def fit_code(code: str, line_length: int) -> tuple[str, list[str]]:
    """``code`` with each long line's innermost statement reformatted at ``line_length`` and long full-line
    comments rewrapped; also the lines still too long. Raises ValueError if the syntax tree would change."""
    try:
        before = ast.dump(ast.parse(code))
    except SyntaxError:  # IPython magics: shown as written
        return code, [line for line in code.splitlines() if len(line) > line_length]
    lines = code.split("\n")
    for _ in range(len(lines)):  # one statement per pass, from the bottom, so line numbers stay valid
        long = [i for i, line in enumerate(lines, 1) if len(line) > line_length]
        tree = ast.parse("\n".join(lines))
        spans = []
        for node in _statements(tree, lines):
            if any(node.lineno <= i <= node.end_lineno for i in long):
                # the innermost statement: a compound statement only when the long line is its header
                inner = [
                    c
                    for c in _statements(node, lines)
                    if c is not node and any(c.lineno <= i <= c.end_lineno for i in long)
                ]
                if not inner:
                    spans.append((node.lineno, node.end_lineno, node.col_offset))
        changed = False
        for start, end, col in sorted(set(spans), reverse=True):
            old = lines[start - 1 : end]
            if lines[start - 1][:col].strip():  # a statement after a ';' or a lambda's body: leave it
                continue
            indent = " " * col
            snippet = textwrap.dedent("\n".join(old)) + "\n"
            new = ruff_format(snippet, line_length - col).rstrip("\n").split("\n")
            new = [indent + line if line else line for line in new]
            if old[-1].rstrip().endswith(";") and not new[-1].endswith(";"):
                # ruff drops a trailing ';', which in a notebook hides the last expression's value: keep it
                new[-1] += ";"
            if new != old:
                lines[start - 1 : end] = new
                changed = True
                break
        if not changed:
            break
    out = []
    for line in lines:  # full-line comments: rewrap at the limit, same indentation
        stripped = line.lstrip()
        if len(line) > line_length and stripped.startswith("# "):
            indent = line[: len(line) - len(stripped)]
            out += textwrap.wrap(stripped[2:], line_length, initial_indent=indent + "# ",
                                 subsequent_indent=indent + "# ", break_on_hyphens=False)  # fmt: skip
        else:
            out.append(line)
    result = "\n".join(out)
    if ast.dump(ast.parse(result)) != before:
        raise ValueError("reformatting would change the code's syntax tree:\n" + code)
    return result, [line for line in out if len(line) > line_length]


def included_objects(md: Path) -> list[tuple[Path, str]]:
    """The (module, object) pairs a chapter shows with ``literalinclude`` ``:pyobject:``."""
    found = []
    for target, options in INCLUDE.findall(md.read_text(encoding="utf-8")):
        obj = re.search(r":pyobject:\s*(\S+)", options)
        if obj:
            found.append(((md.parent / target).resolve(), obj.group(1)))
    return found


def object_lines(module: Path, name: str) -> list[str]:
    """The source lines of ``name`` (``Class.method`` for a method) in ``module``, decorators included."""
    source = module.read_text(encoding="utf-8")
    scope: ast.AST = ast.parse(source)
    for part in name.split("."):
        kinds = ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef
        node = next((n for n in ast.iter_child_nodes(scope) if isinstance(n, kinds) and n.name == part), None)
        if node is None:
            raise ValueError(f"{module} has no object {name!r}")
        scope = node
    start = min([scope.lineno] + [d.lineno for d in scope.decorator_list])
    return source.splitlines()[start - 1 : scope.end_lineno]


def process_chapter(md: Path, line_length: int, check: bool) -> list[str]:
    text = md.read_text(encoding="utf-8")
    left: list[str] = []

    def one(match: re.Match) -> str:
        head, body, fence = match.groups()
        meta = re.match(r"((?::[^\n]*\n)|(?:---\n.*?\n---\n))*", body, re.S).group(0)
        code = body[len(meta) :]
        if check:
            left.extend(line for line in code.splitlines() if len(line) > line_length)
            return match.group(0)
        new, still = fit_code(code.rstrip("\n"), line_length)
        left.extend(still)
        return head + meta + new + "\n" + fence

    new_text = CELL.sub(one, text)
    if new_text != text:
        md.write_text(new_text, encoding="utf-8")
    problems = [f"{md.relative_to(ROOT)}: code cell: {len(line)}: {line.strip()[:90]}" for line in left]
    for module, name in included_objects(md):
        problems += [
            f"{module.relative_to(ROOT)}:{name} (shown by {md.name}): {len(line)}: {line.strip()[:80]}"
            for line in object_lines(module, name)
            if len(line) > max(line_length, PACKAGE_LINE_LENGTH)
        ]
    return problems


def process_module(py: Path, line_length: int, check: bool) -> list[str]:
    text = py.read_text(encoding="utf-8")
    if not check:
        new, _ = fit_code(text.rstrip("\n"), line_length)
        if new + "\n" != text:
            py.write_text(new + "\n", encoding="utf-8")
            text = new + "\n"
    return [
        f"{py.relative_to(ROOT)}:{i}: {len(line)}: {line.strip()[:80]}"
        for i, line in enumerate(text.splitlines(), 1)
        if len(line) > line_length
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 on a long shown line")
    parser.add_argument("--line-length", type=int, default=SHOWN_LINE_LENGTH)
    args = parser.parse_args(argv)
    if args.line_length < 40:
        parser.error(f"--line-length must be at least 40; received {args.line_length}")
    paths = [p.resolve() for p in args.paths] or sorted((ROOT / "book").glob("*.md"))
    problems: list[str] = []
    for path in paths:
        if not path.is_file() or path.suffix not in (".md", ".py"):
            parser.error(f"a path must be a chapter (.md) or a module (.py); received {path}")
        run = process_chapter if path.suffix == ".md" else process_module
        problems += run(path, args.line_length, args.check)
    for problem in problems:
        print(problem)
    verb = "longer than" if args.check else "still longer than (edit by hand)"
    print(f"{len(problems)} shown line(s) {verb} {args.line_length} characters", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
