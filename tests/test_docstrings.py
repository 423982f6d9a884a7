"""Every public function of the package that raises says so in a ``Raises:`` section (issue 16, section 6).

A function counts as raising when its body has a ``raise`` or calls one of the argument checks of
``dltricks._checks``. Constructors, ``forward`` and the ``fit`` hooks (``on_*``) are documented in their
class's docstring, where the reader of the class looks.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "companion" / "dltricks"
CHECKS = {"fail", "check_int", "check_float", "check_choice", "check_type", "check_tensors"}
CLASS_DOCUMENTED = {"__init__", "forward"}
# Modules being written under other issues at the time this test was added; each is to get its Raises
# sections (and leave this set) with its own issue.
# book.py is being edited by the book's lead at the same time.
PENDING = {"book.py"}


def _raises(fn: ast.AST) -> bool:
    for node in ast.walk(fn):
        if isinstance(node, ast.Raise):
            return True
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name in CHECKS:
                return True
    return False


def _undocumented(path: Path) -> list[str]:
    missing = []

    def visit(body, cls=None, prefix=""):
        for node in body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                visit(node.body, node, f"{prefix}{node.name}.")
            elif isinstance(node, ast.FunctionDef) and (
                not node.name.startswith("_") or node.name == "__init__"
            ):
                if not _raises(node):
                    continue
                on_class = cls is not None and (node.name in CLASS_DOCUMENTED or node.name.startswith("on_"))
                owner = cls if on_class else node
                if "Raises:" not in (ast.get_docstring(owner) or ""):
                    missing.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {prefix}{node.name}")

    visit(ast.parse(path.read_text()).body)
    return missing


def test_every_public_function_that_raises_has_a_raises_section():
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if any(part.startswith("_") and part != "__init__.py" for part in rel.parts) or str(rel) in PENDING:
            continue  # private modules (_checks, optim/_base) are not the public API
        missing += _undocumented(path)
    assert not missing, "no Raises: section in\n" + "\n".join(missing)
