"""The build pipeline: a failing cell names its chapter and cell; nbval reproduces the checked outputs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import build_book

ROOT = Path(__file__).resolve().parents[1]
HEADER = """---
jupytext:
  text_representation: {extension: .md, format_name: myst}
kernelspec: {display_name: Python 3, language: python, name: python3}
---
"""


def test_toc_lists_the_chapters_in_order():
    files = build_book.toc_files(ROOT / "_toc.yml")
    assert files[0] == "book/intro" and "book/generalization" in files and files[-1] == "book/report"
    assert build_book.is_notebook(ROOT / "book" / "generalization.md")
    assert not build_book.is_notebook(ROOT / "book" / "intro.md")


@pytest.mark.book
def test_a_failing_cell_names_the_chapter_and_the_cell(tmp_path):
    from papermill.exceptions import PapermillExecutionError

    md = tmp_path / "broken.md"
    md.write_text(
        HEADER
        + textwrap.dedent("""
        ```{code-cell} ipython3
        :tags: [parameters]
        PROFILE = "quick"
        ```

        ```{code-cell} ipython3
        x = 1
        ```

        ```{code-cell} ipython3
        raise ValueError("the data is wrong")
        ```
    """)
    )
    with pytest.raises(PapermillExecutionError) as info:
        build_book.execute(md, tmp_path / "out.ipynb", {"PROFILE": "smoke"}, {})
    message = build_book.report_failure("broken", info.value)
    assert message.startswith("Chapter 'broken' failed in cell")
    assert "ValueError: the data is wrong" in message
    assert 'raise ValueError("the data is wrong")' in message


CHAPTERS = [
    Path(f).name
    for f in build_book.toc_files(ROOT / "_toc.yml")
    if build_book.is_notebook(ROOT / f"{f}.md") and Path(f).name != "report"
]


# What a GPU machine may lack (one seen had PyTorch but neither TensorFlow nor TensorBoard): the smoke runs
# below hide these packages and the C++ compiler torch.compile needs on a CPU, so every chapter must skip
# what needs them with a printed reason. The quick-profile build runs the same chapters with all of them.
HIDE_OPTIONAL = {
    "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT / "tests" / "hide_optional"), os.environ.get("PYTHONPATH")])
    ),
    "DLTRICKS_HIDE": "tensorflow,keras,tf_keras,tensorboard",
    "CXX": "/nonexistent/c++",  # torch._inductor looks for $CXX (default g++) to compile CPU kernels
}


@pytest.mark.book
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_nbval_reproduces_the_checked_outputs(tmp_path, chapter):
    """Execute the chapter in the smoke profile without the optional tools, then let nbval re-run it and
    compare the tagged cells."""
    import papermill as pm

    source = (ROOT / "book" / f"{chapter}.md").read_text()
    assert "nbval-check-output" in source, "every chapter tags at least one deterministic cell for nbval"
    env = {
        "DLTRICKS_RESULTS_DIR": str(tmp_path / "results"),
        "DLTRICKS_PROGRESS": "0",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **HIDE_OPTIONAL,
    }
    out = tmp_path / f"{chapter}.ipynb"
    build_book.execute(ROOT / "book" / f"{chapter}.md", out, {"PROFILE": "smoke", "DEVICE": "cpu"}, env)
    assert out.exists() and pm  # the executed notebook holds the reference outputs
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q", str(out)],
        cwd=ROOT / "book",
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "passed" in proc.stdout
