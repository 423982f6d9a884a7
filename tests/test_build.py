"""The build pipeline: a failing cell names its chapter and cell; nbval reproduces the checked outputs."""

from __future__ import annotations

import os
import re
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


# What TensorFlow, absl, oneDNN, the CUDA probes and the Jupyter kernel print when nobody quiets them.
LOG_NOISE = re.compile(
    r"oneDNN|absl|TF_ENABLE_ONEDNN_OPTS|cuda_(?:dnn|blas|fft|drivers)|Unable to register cu|"
    r"This TensorFlow binary|computation placer|^[IWEF]\d{4} \d\d:\d\d|IPKernelApp|"
    r"KeyboardInterrupt caught|tensorflow/core|xla/",
    re.M,
)


@pytest.mark.book
def test_the_build_prints_no_log_noise(tmp_path):
    """Issue 26: `make book`'s output is the build's own progress and real errors. Distillation's smoke
    profile imports TensorFlow and runs Keras; nothing of TensorFlow's, absl's or the kernel's may show."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "build_book.py"), "--profile", "smoke",
         "--only", "distillation", "--no-html", "--jobs", "1", "--build-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},  # the build sets it
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert not LOG_NOISE.findall(out), out[-4000:]
    stray = [line for line in out.splitlines() if line.strip() and not line.startswith("[book]")]
    assert not stray, stray


@pytest.mark.book
def test_no_page_shows_log_noise(built_book):
    """Issue 26: no executed chapter's output (stderr included, which the site drops) holds log lines."""
    import nbformat

    found = []
    for path in sorted((built_book / "executed" / "book").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            for output in cell.get("outputs", []):
                text = output.get("text", "") if output.get("output_type") == "stream" else ""
                text += str(output.get("data", {}).get("text/plain", ""))
                found += [f"{path.stem}: {m.group(0)!r}" for m in LOG_NOISE.finditer(text)]
    assert not found, found
