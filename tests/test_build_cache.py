"""The build's cache and parallel runs: what invalidates a chapter; numbers that do not depend on --jobs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import nbformat
import pytest

import build_book
import build_inputs

HEADER = """---
jupytext:
  text_representation: {extension: .md, format_name: myst}
kernelspec: {display_name: Python 3, language: python, name: python3}
---
"""

CHAPTER = HEADER + textwrap.dedent("""
    # A tiny chapter

    Some prose.

    ```{code-cell} ipython3
    :tags: [parameters]
    PROFILE = "quick"
    SEED = 0
    ```

    ```{code-cell} ipython3
    import torch
    from torch import nn

    from dltricks import book

    chapter = book.start_chapter(NAME, profile=PROFILE, device="cpu", seeds=[SEED])
    torch.manual_seed(SEED)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(2048, 64), torch.randint(0, 10, (2048,))
    for step in range(STEPS):
        i = (step * 128) % 2048
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[i : i + 128]), y[i : i + 128])
        loss.backward()
        opt.step()
    book.record("weight_sum", float(model[0].weight.double().sum()), "{:.17g}", glue=False)
    book.record("threads", torch.get_num_threads(), glue=False)
    ```
""")


def write_chapter(folder: Path, name: str, steps: int = 50, prose: str = "Some prose.") -> Path:
    md = folder / f"{name}.md"
    text = CHAPTER.replace("Some prose.", prose).replace(
        "import torch\n", f"NAME, STEPS = {name!r}, {steps}\nimport torch\n"
    )
    md.write_text(text, encoding="utf-8")
    return md


def test_imported_modules_follow_from_and_plain_imports():
    source = "from dltricks import book, plotting\nimport dltricks.train\n%matplotlib inline\n"
    source += "from dltricks.optim import (SGD,\n Adam)\n"
    found = build_inputs.imported_modules(source)
    assert {"dltricks", "dltricks.book", "dltricks.plotting", "dltricks.train", "dltricks.optim"} <= found
    assert "dltricks.SGD" not in found and "dltricks.optim.SGD" not in found


def test_package_closure_is_transitive_and_ignores_unused_modules(tmp_path):
    pkg = tmp_path / "dltricks"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("import dltricks.sub.c\n")
    (pkg / "sub" / "__init__.py").write_text("from . import d\n")
    (pkg / "sub" / "c.py").write_text("from ..e import g\n")
    (pkg / "sub" / "d.py").write_text("")
    (pkg / "e.py").write_text("")
    (pkg / "unused.py").write_text("")
    closure = build_inputs.package_closure({"dltricks.a"}, package=pkg)
    expected = {"__init__.py", "a.py", "b.py", "sub/__init__.py", "sub/c.py", "sub/d.py", "e.py"}
    assert set(closure) == {f"dltricks/{f}" for f in expected}
    before = build_inputs.package_closure({"dltricks.a"}, package=pkg)
    (pkg / "unused.py").write_text("x = 1\n")
    assert build_inputs.package_closure({"dltricks.a"}, package=pkg) == before
    (pkg / "sub" / "c.py").write_text("from ..e import g  # changed\n")
    assert build_inputs.package_closure({"dltricks.a"}, package=pkg) != before


def test_the_real_chapters_depend_on_the_modules_they_import():
    md = build_book.ROOT / "book" / "dropout.md"
    modules = set().union(*map(build_inputs.imported_modules, build_inputs.chapter_code(md)))
    closure = build_inputs.package_closure(modules)
    assert {"dltricks/dropout.py", "dltricks/train.py", "dltricks/book.py", "dltricks/__init__.py"} <= set(
        closure
    )
    assert "dltricks/polynomial.py" not in closure  # only the Generalization chapter uses it


def _plan(tmp: Path, md: Path, params: dict, env: dict, results: Path) -> dict:
    out = tmp / "executed" / f"{md.stem}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    nb = build_book.prepare(md, params, build_inputs.describe(md, params, env))
    source = out.with_suffix(".input.ipynb")
    nbformat.write(nb, source)
    return {"name": md.stem, "source": source, "out": out, "cwd": md.parent, "env": env, "nb": nb}


def _workspace(folder: Path):
    """A results folder, a cache and the environment the build gives a chapter (one thread)."""
    from dltricks.threads import thread_env

    results = folder / "results"
    results.mkdir(parents=True)
    env = {"DLTRICKS_RESULTS_DIR": str(results), "DLTRICKS_PROGRESS": "0"} | thread_env(1)
    return results, build_inputs.open_cache(folder / "cache"), env


@pytest.mark.book
def test_cache_hits_on_prose_edits_and_misses_on_code_parameter_and_package_changes(tmp_path, capfd):
    results, cache, env = _workspace(tmp_path)
    md = write_chapter(tmp_path, "tiny")
    plan = _plan(tmp_path, md, {"SEED": 3}, env, results)
    assert build_book.run_chapters([plan], 1, cache, results) == []
    assert "IPKernelApp" not in capfd.readouterr().err  # the kernel's start-up notice is not build output
    recorded = json.loads((results / "tiny.json").read_text())
    assert recorded["build"]["source"] == "executed" and recorded["threads"] == 1
    (results / "tiny.json").unlink()

    def lookup(md: Path, params: dict, inputs: dict | None = None) -> bool:
        nb = build_book.prepare(md, params, inputs or build_inputs.describe(md, params, env))
        return build_inputs.restore(cache, nb, tmp_path / "restored.ipynb", results / "tiny.json")

    assert lookup(md, {"SEED": 3})  # nothing changed
    assert json.loads((results / "tiny.json").read_text())["results"] == recorded["results"]
    write_chapter(tmp_path, "tiny", prose="Better prose, same code.")
    assert lookup(md, {"SEED": 3})
    restored = nbformat.read(tmp_path / "restored.ipynb", as_version=4)
    assert "Better prose" in "".join(c.source for c in restored.cells if c.cell_type == "markdown")
    assert any(
        c.get("outputs") is not None and c.execution_count for c in restored.cells if c.cell_type == "code"
    )
    # Hiding a cell (a display tag) re-renders from the cache, and the page shows the new tag.
    text = md.read_text()
    md.write_text(
        text.replace("```{code-cell} ipython3\nNAME", "```{code-cell} ipython3\n:tags: [hide-input]\nNAME")
    )
    assert lookup(md, {"SEED": 3})
    restored = nbformat.read(tmp_path / "restored.ipynb", as_version=4)
    assert [c.metadata.get("tags") for c in restored.cells if c.cell_type == "code"][-1] == ["hide-input"]
    md.write_text(
        text.replace(
            "```{code-cell} ipython3\nNAME", "```{code-cell} ipython3\n:tags: [raises-exception]\nNAME"
        )
    )
    assert not lookup(md, {"SEED": 3})  # a tag that changes how the cell runs
    md.write_text(text)
    assert not lookup(md, {"SEED": 4})  # another parameter value
    inputs = build_inputs.describe(md, {"SEED": 3}, env)
    inputs["package"] = dict(inputs["package"], **{"dltricks/book.py": "0" * 64})
    assert not lookup(md, {"SEED": 3}, inputs)  # a package module it imports changed
    write_chapter(tmp_path, "tiny", steps=51, prose="Better prose, same code.")
    assert not lookup(md, {"SEED": 3})  # its code changed


@pytest.mark.book
def test_numbers_are_the_same_serial_and_in_parallel(tmp_path):
    """Two chapters run one at a time and two at once record bit-identical numbers (one thread each)."""
    recorded = {}
    for jobs in (1, 2):
        folder = tmp_path / f"jobs{jobs}"
        results, cache, env = _workspace(folder)
        plans = [
            _plan(folder, write_chapter(folder, n, steps=300), {"SEED": 5}, env, results) for n in ("a", "b")
        ]
        assert build_book.run_chapters(plans, jobs, cache, results) == []
        recorded[jobs] = {n: json.loads((results / f"{n}.json").read_text())["results"] for n in ("a", "b")}
    assert recorded[1] == recorded[2]
    assert recorded[1]["a"] == recorded[1]["b"]  # same code, same seed


@pytest.mark.book
def test_a_failing_chapter_is_named_and_the_others_are_kept(tmp_path, capsys):
    results, cache, env = _workspace(tmp_path)
    good = write_chapter(tmp_path, "good")
    bad = write_chapter(tmp_path, "bad")
    # It fails after recording a first number, so it leaves partial results behind.
    planted = 'book.record("threads", torch.get_num_threads(), glue=False)'
    bad.write_text(bad.read_text().replace(planted, planted + "\nraise ValueError('planted')"))
    plans = [_plan(tmp_path, md, {}, env, results) for md in (bad, good)]
    failures = build_book.run_chapters(plans, 2, cache, results)
    assert len(failures) == 1 and failures[0].startswith("Chapter 'bad' failed in cell")
    assert "ValueError: planted" in failures[0]
    assert (results / "good.json").exists()
    nb = build_book.prepare(good, {}, build_inputs.describe(good, {}, env))
    assert build_inputs.restore(cache, nb, tmp_path / "again.ipynb", results / "good.json")
    # The partial results say so, and so does a chapter killed before the build could annotate its results.
    killed = json.loads((results / "good.json").read_text())
    del killed["build"]
    (results / "killed.json").write_text(json.dumps(killed))
    capsys.readouterr()
    build_book.print_times(results, ["bad", "good", "killed"])
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[1]: line for line in out if line.startswith("[book]   ")}
    assert "FAILED: partial results" in rows["bad"]
    assert rows["good"].endswith("executed")
    assert "INCOMPLETE" in rows["killed"] and "cache" not in rows["killed"]


def test_repository_buttons_come_from_one_setting():
    import yaml

    config = (build_book.ROOT / "_config.yml").read_text(encoding="utf-8")
    assert build_book.repository_config(config, url="") == config  # a local build: no buttons
    published = yaml.safe_load(build_book.repository_config(config, url="https://example.org/dltricks"))
    assert published["repository"]["url"] == "https://example.org/dltricks"
    assert published["html"]["use_repository_button"] and published["html"]["use_issues_button"]
    assert not published["html"]["use_edit_page_button"]  # it would point at a staged .ipynb
    assert published["sphinx"] == yaml.safe_load(config)["sphinx"]  # nothing else changes


def test_the_parameters_are_shown_once_and_folded(tmp_path):
    md = write_chapter(tmp_path, "tiny")
    nb = build_book.prepare(md, {"SEED": 3}, {})
    tags = [c.metadata.get("tags", []) for c in nb.cells if c.cell_type == "code"]
    assert "remove-cell" in tags[0] and "parameters" in tags[0]  # the defaults: not on the page
    assert "injected-parameters" in tags[1] and "hide-input" in tags[1]  # this run's values: one click away
