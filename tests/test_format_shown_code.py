"""tools/format_shown_code.py: only statements with a long line change, the syntax tree never does."""

from __future__ import annotations

import ast

import format_shown_code as fsc
import pytest

CODE = """x = 1  # a short line stays as written
y = dict(a=1,
         b=2)
if x:
    total = some_function(first_argument_value, second_argument_value, third_argument_value, fourth=4)
elif y and another_condition_that_is_long(first_argument_value, second_argument_value, third=3):
    pass
# a full-line comment that is far too long to fit in the block of code at the width that the page gives it
"""


def test_long_statements_are_refit_and_the_rest_is_kept():
    new, left = fsc.fit_code(CODE.rstrip("\n"), 60)
    assert left == []
    assert all(len(line) <= 60 for line in new.splitlines())
    assert ast.dump(ast.parse(new)) == ast.dump(ast.parse(CODE))
    assert new.startswith("x = 1  # a short line stays as written\ny = dict(a=1,\n         b=2)\n")


def test_code_that_fits_is_unchanged_and_magics_are_left_alone():
    assert fsc.fit_code("a = 1\nb = 2", 60) == ("a = 1\nb = 2", [])
    magic = "%matplotlib inline\n" + "z = " + " + ".join(["1"] * 40)
    assert fsc.fit_code(magic, 60) == (magic, [magic.splitlines()[1]])


def test_the_line_length_is_checked(capsys):
    with pytest.raises(SystemExit):
        fsc.main(["--line-length", "10"])
    assert "--line-length must be at least 40; received 10" in capsys.readouterr().err


def test_a_trailing_semicolon_that_hides_a_cells_value_is_kept():
    """ruff drops the ';' that stops a notebook showing the last expression's value (a comparison's repr
    under a figure duplicated the figure's name): the refit keeps it."""
    code = 'book.record_comparison("a_key", treatment_values, baseline_values, "{:+.1%}", n_test=N);'
    out, _ = fsc.fit_code(code, 60)
    assert out != code and out.rstrip().endswith(");")
