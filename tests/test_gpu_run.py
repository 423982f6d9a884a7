"""The CPU rehearsal of the prepared GPU run (tools/gpu-run.sh), so that it cannot break silently.

The device has Python 3.12 with torch but no Jupyter stack. Here no Python 3.12 has torch: the CPU wheel of
torch 2.13 on this disk is for Python 3.11, PyPI's Linux wheel for 3.12 is the CUDA build (gigabytes with its
nvidia-* dependencies) and the CPU-only index is out of reach. So the rehearsal is split where the device's
environment cannot be copied, and each half runs the real script:

1. The offline install, on Python 3.12 (pyenv's) in a fresh virtual environment without torch:
   ``device-prep.sh`` makes the 3.12 wheelhouse (``.whl/``) when it is missing, ``gpu-run.sh`` installs it
   with ``pip --no-index --target`` exactly as on the device, registers the kernel (in a temporary Jupyter
   directory, not the user's) and executes the preflight notebook through papermill on that 3.12 kernel.
2. The run itself, on this project's venv as the "device python" (``INSTALL=0``, ``DEVICE=cpu``, the smoke
   profile; the GPU chapter's quick profile stands in for the full one): the full-profile step is cut off at
   its time limit (its partial notebook and results must come back, marked failed), one quick chapter runs
   to the end, its claim tests run on its results, and the timing table is written as it goes. The claim
   tests accept only the quick and full profiles, so at the smoke profile some of them fail by design; the
   rehearsal checks that they ran, not their verdict.

Cost, measured on this two-core machine while others were using it: part 1 took 23 s with ``.whl/`` present
and 98 s when device-prep.sh had to download it (19 MB); part 2 took 343 s at a load average of 9 (one
smoke chapter, a cut-off one and two claim-test runs; about two minutes on idle cores, estimated).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "gpu-run.sh"
PREP = ROOT.parent / "shared" / "tools" / "device-prep.sh"
pytestmark = pytest.mark.book


def python312() -> str | None:
    """A working Python 3.12: pyenv's (as on this project's machines), else one on the PATH (not a shim
    that names no installed version)."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for candidate in [
        *sorted(map(str, pyenv.glob("3.12*/bin/python3.12")), reverse=True),
        shutil.which("python3.12"),
    ]:
        if candidate:
            code = "import sys; print(sys.version_info[:2])"
            probe = subprocess.run([candidate, "-c", code], capture_output=True, text=True, timeout=60)
            if probe.returncode == 0 and probe.stdout.strip() == "(3, 12)":
                return candidate
    return None


def run(env: dict[str, str], out: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), str(out)], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def rows(out: Path) -> dict[str, dict]:
    return {r["step"]: r for r in json.loads((out / "timing.json").read_text())}


def test_offline_install_and_preflight_on_python_312(tmp_path):
    py = python312()
    if py is None:
        pytest.skip(
            "no Python 3.12 on this machine (pyenv 3.12 expected): the offline install is not rehearsed"
        )
    wheels = ROOT / ".whl"
    if not any(wheels.glob("*cp312*.whl")):
        assert PREP.exists(), f"{PREP} is missing: the wheelhouse for the device cannot be prepared"
        # device-prep.sh appends to .git/info/exclude; a clone made without git's templates has no info/.
        exclude = subprocess.run(["git", "rev-parse", "--git-path", "info/exclude"], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        (ROOT / exclude).parent.mkdir(parents=True, exist_ok=True)
        prep = subprocess.run(
            ["bash", str(PREP), "pytest"], cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        assert prep.returncode == 0, prep.stdout[-2000:] + prep.stderr[-3000:]
    venv = tmp_path / "py312"
    subprocess.run([py, "-m", "venv", str(venv)], check=True, timeout=120)
    out = tmp_path / "out"
    env = {"PY": str(venv / "bin" / "python"), "SITE": str(tmp_path / "site"), "PREFLIGHT_ONLY": "1",
           "JUPYTER_DATA_DIR": str(tmp_path / "jupyter"), "PYTHONPATH": ""}  # fmt: skip
    proc = run(env, out, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = rows(out)
    assert steps["preflight notebook"]["status"].startswith("ok: 3.12"), steps
    assert "torch MISSING" in steps["preflight notebook"]["status"]  # this venv is the device minus torch
    assert (tmp_path / "jupyter" / "kernels" / "python3" / "kernel.json").exists()  # not the user's kernels
    nb = json.loads((out / "preflight.ipynb").read_text())
    assert all(c["execution_count"] for c in nb["cells"])  # the glue cell ran on 3.12 from the wheelhouse


def test_rehearsal_cuts_off_the_full_step_and_keeps_what_finished(tmp_path):
    out = tmp_path / "out"
    # The cut-off step runs the GPU chapter's quick profile: at least 90 s on two idle cores, so a 40 s
    # limit always falls mid-chapter. (Its smoke profile finished inside 40 s on an idle CI machine, and the
    # step then counted as ok.) 40 s is also enough for the kernel to start and run the first cells.
    env = {"PY": sys.executable, "INSTALL": "0", "DEVICE": "cpu", "FULL_PROFILE": "quick",
           "QUICK_PROFILE": "smoke", "FULL": "gpu", "FULL_LIMIT_S": "40", "CHAPTERS": "generalization",
           "BUDGET_S": "1200", "DLTRICKS_PROGRESS": "0"}  # fmt: skip
    proc = run(env, out, timeout=1500)  # the budget: room for a loaded machine; the cut-off is FULL_LIMIT_S
    assert proc.returncode == 1, (
        proc.stdout[-3000:] + proc.stderr[-3000:]
    )  # the cut-off step counts as failed
    steps = rows(out)
    assert list(steps) == ["environment", "preflight notebook", "gpu", "generalization", "total"]
    assert steps["gpu"]["status"].startswith("cut off at the time limit")
    partial = json.loads((out / "full" / "executed" / "gpu.ipynb").read_text())  # saved after every cell
    code = [c for c in partial["cells"] if c["cell_type"] == "code"]
    assert 0 < sum(bool(c["execution_count"]) for c in code) < len(code)
    assert json.loads((out / "full" / "results" / "gpu.json").read_text())["build"]["source"] == "failed"
    assert steps["generalization"]["status"] == "ok"
    done = json.loads((out / "quick" / "executed" / "generalization.ipynb").read_text())
    assert all(c["execution_count"] for c in done["cells"] if c["cell_type"] == "code")
    results = json.loads((out / "quick" / "results" / "generalization.json").read_text())
    assert results["profile"] == "smoke" and results["build"]["source"] == "executed"
    report = ET.parse(out / "quick" / "claims-generalization.xml").getroot()
    suite = report if report.tag == "testsuite" else report[0]
    assert int(suite.get("tests")) > 0  # the claim tests ran on these results (smoke: some fail by design)
    assert "passed" in steps["generalization"]["claims"] or "failed" in steps["generalization"]["claims"]
    table = (out / "timing.md").read_text()
    assert "| gpu | quick | cut off" in table and "| generalization | smoke | ok |" in table
    assert (out / "environment.json").exists() and (out / "run.log").exists()
