"""Shared fixtures: where the built book lives, and building it when it is missing.

`make test` builds the book in the quick profile into ``_build/test`` before running pytest and passes
``DLTRICKS_BUILD_DIR``; running ``pytest`` directly builds it on first use of a book fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

# The book's thread budget for every test process (pytest-xdist runs one per core): set before any test module
# imports torch or TensorFlow, so their pools start at this size (see dltricks/threads.py for why).
from dltricks.threads import limit_threads, thread_budget, thread_env  # noqa: E402

os.environ.update(thread_env(thread_budget()))
limit_threads()


@pytest.fixture(scope="session")
def build_dir() -> Path:
    path = Path(os.environ.get("DLTRICKS_BUILD_DIR", ROOT / "_build" / "test"))
    return path if path.is_absolute() else ROOT / path


def _build(build_dir: Path, *extra: str) -> None:
    """Build the book in the quick profile into ``build_dir`` (the cache makes a second call cheap)."""
    cmd = [sys.executable, str(ROOT / "tools" / "build_book.py"), "--profile", "quick"]
    cmd += ["--build-dir", str(build_dir)]
    proc = subprocess.run([*cmd, *extra], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"building the book failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")


@pytest.fixture(scope="session")
def built_book(build_dir: Path) -> Path:
    """The build directory, with executed chapters, results and HTML (built here if missing)."""
    if not (build_dir / "html" / "index.html").exists():
        _build(build_dir)
    return build_dir


@pytest.fixture(scope="session")
def results(build_dir: Path):
    """Load a chapter's results JSON by name: ``results("generalization")``.

    Claim tests need only the results, so a build made with ``--no-html`` (or another seed's build) serves;
    a chapter whose results are missing is executed here, without rendering.
    """

    def load(chapter: str) -> dict:
        path = build_dir / "results" / f"{chapter}.json"
        if not path.exists():
            _build(build_dir, "--no-html", "--only", chapter)
        return json.loads(path.read_text(encoding="utf-8"))

    return load
