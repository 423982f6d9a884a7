"""Project hygiene: environment.yml agrees with pyproject.toml, the package is typed and ruff-clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted |= set(extra)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {p for p in pip if not p.startswith("-e")}
    assert listed == wanted


def test_package_is_typed():
    assert (ROOT / "companion" / "dltricks" / "py.typed").exists()


def test_no_notebooks_are_committed_under_book():
    out = subprocess.run(["git", "ls-files", "book"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    assert not [f for f in out.stdout.split() if f.endswith(".ipynb")]


@pytest.mark.skipif(
    shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists(),
    reason="ruff is not installed",
)
def test_ruff_is_clean():
    ruff = (
        str(Path(sys.executable).parent / "ruff")
        if (Path(sys.executable).parent / "ruff").exists()
        else "ruff"
    )
    for args in (["check"], ["format", "--check"]):
        proc = subprocess.run(
            [ruff, *args, "companion", "tests", "tools", "benchmarks"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(
    shutil.which("mypy") is None and not (Path(sys.executable).parent / "mypy").exists(),
    reason="mypy is not installed",
)
def test_mypy_is_clean():
    """``mypy -p dltricks`` with the settings of pyproject's [tool.mypy] reports no error."""
    mypy = (
        str(Path(sys.executable).parent / "mypy")
        if (Path(sys.executable).parent / "mypy").exists()
        else "mypy"
    )
    proc = subprocess.run([mypy, "-p", "dltricks"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_declared_package_data_exists():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for package, files in data.items():
        for name in files:
            assert (ROOT / "companion" / package.replace(".", "/") / name).exists(), name


def test_the_checkpoint_does_not_import_the_training_loop():
    """No import cycle: the loop builds on the checkpoint (and on dltricks.callbacks), never the reverse."""
    code = "import sys, dltricks.checkpoint; print('dltricks.train' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_schedules_package_keeps_every_name_importable():
    import dltricks.schedules as sch
    from dltricks.schedules import callbacks, functions, plateau

    names = {
        "PlateauSchedule": callbacks, "Schedule": callbacks, "ReduceOnPlateau": plateau,
        "cosine_with_warmup": functions, "exponential_decay": functions, "one_cycle": functions,
        "one_cycle_momentum": functions, "piecewise_constant": functions, "power_decay": functions,
        "step_decay": functions, "multi_step": functions,
    }  # fmt: skip
    assert set(sch.__all__) == set(names)
    for name, module in names.items():
        assert getattr(sch, name) is getattr(module, name)


def test_train_re_exports_what_callbacks_define():
    import dltricks.callbacks as cb
    import dltricks.train as tr

    for name in ("Batch", "Callback", "History", "Metric", "TrainState"):
        assert getattr(tr, name) is getattr(cb, name)
