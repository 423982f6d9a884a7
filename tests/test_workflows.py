"""The GPU workflow (.github/workflows/book-gpu.yml) cannot run here; these checks keep it valid offline.

check-jsonschema validates it against the GitHub workflow schema it ships (SchemaStore's), zizmor audits it
(pinned actions, permissions, injection) in its pedantic persona, and the commands it runs are checked
against the Makefile and the build script, so a rename here breaks a test rather than the published book.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
GPU = ROOT / ".github" / "workflows" / "book-gpu.yml"


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).with_name(name))
    if not Path(path).exists():
        pytest.fail(f"{name} is not installed: `make install` installs it with the dev extras")
    return path


def test_there_is_a_gpu_workflow():
    assert GPU in WORKFLOWS


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_the_github_schema(workflow):
    cmd = [_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(workflow)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_zizmor_finds_nothing(workflow):
    cmd = [_tool("zizmor"), "--offline", "--persona=pedantic", "--no-progress", str(workflow)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_gpu_workflow_builds_the_full_profile_on_cuda_and_publishes_what_the_build_writes():
    jobs = yaml.safe_load(GPU.read_text(encoding="utf-8"))["jobs"]
    steps = jobs["build"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert re.search(r"make book PROFILE=full DEVICE=cuda", runs)
    assert "gpu" in jobs["build"]["runs-on"]
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert upload["with"]["path"] == "_build/html"
    build_script = (ROOT / "tools" / "build_book.py").read_text(encoding="utf-8")
    assert '"html"' in build_script  # the site is copied to <build>/html
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in re.findall(r"make (\w+)", runs):
        assert re.search(rf"^{target}:", makefile, re.M), target
    assert "TORCH_SPEC" in makefile
    # The claim tests it runs exist and accept a full-profile run.
    assert list((ROOT / "tests").glob("test_*_chapter.py"))
    assert 'run["profile"] in ("quick", "full")' in (ROOT / "tests" / "chapter_results.py").read_text("utf-8")
