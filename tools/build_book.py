"""Execute every chapter with papermill (in parallel, cached when unchanged), then render the book.

    python tools/build_book.py [--profile auto|smoke|quick|full] [--device auto|cpu|cuda] [--seed 0]
                               [--jobs N] [--force] [--only CHAPTER ...] [--no-html] [--build-dir _build]
    python tools/build_book.py --times [--build-dir _build]   # each chapter's time and where it came from

Steps:

1. Check that Fashion-MNIST can be found.
2. For each notebook page of ``_toc.yml`` (Jupytext MyST Markdown, converted in memory), inject the
   parameters (papermill) and describe what its results depend on (:mod:`build_inputs`): its code cells,
   the package modules it imports (transitively), its parameters, the thread budget and the versions of the
   libraries it runs on. If jupyter-cache holds an execution of exactly that, its outputs are merged into
   the current page (so a prose edit renders without executing anything) and its results JSON is
   restored. Otherwise the chapter is executed.
3. Chapters execute in parallel (``--jobs``, default: the number of cores), each in a worker process of
   its own with a fixed thread budget (``$DLTRICKS_THREADS``, default 1), so the numbers depend neither on
   ``--jobs`` nor on the machine's load. A failing chapter is reported with its cell; the others finish
   and are cached.
4. The execution report runs last (it reads the other chapters' results).
5. Stage the executed notebooks and the plain pages into ``<build>/src``, render with
   ``jupyter-book build`` (execution off), copy the site to ``<build>/html``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import build_inputs  # noqa: E402  (after the path tweak: a sibling module)

HEARTBEAT_S = 30.0  # one progress line per running chapter at most this often
REPORT = "report"


def toc_files(toc: Path) -> list[str]:
    """Every ``file:`` of the table of contents, root first, in reading order."""
    import yaml

    data = yaml.safe_load(toc.read_text(encoding="utf-8"))
    files = [data["root"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []):
                    walk(child)

    walk(data)
    return files


def is_notebook(md: Path) -> bool:
    """A page is a notebook (a chapter papermill executes) when it has a code cell. Every page carries the
    Jupytext header JupyterLab writes, so the plain pages (introduction, appendices) have one too."""
    return "```{code-cell}" in md.read_text(encoding="utf-8")


def resolve_profile(profile: str) -> str:
    if profile != "auto":
        return profile
    import torch

    return "full" if torch.cuda.is_available() else "quick"


def prepare(md: Path, params: dict, inputs: dict):
    """The notebook papermill will run: the chapter with its parameters injected (papermill's own
    ``prepare_only`` step) and its build inputs in the metadata."""
    import tempfile

    import jupytext
    import nbformat
    import papermill as pm

    nb = jupytext.read(md)
    nb.metadata.setdefault(
        "kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"}
    )
    with tempfile.TemporaryDirectory() as tmp:
        raw, prepared = Path(tmp) / "raw.ipynb", Path(tmp) / "prepared.ipynb"
        jupytext.write(nb, raw, fmt="ipynb")
        pm.execute_notebook(
            str(raw), str(prepared), parameters=params or None, kernel_name="python3", prepare_only=True,
            log_output=False, progress_bar=False,
        )  # fmt: skip
        nb = nbformat.read(prepared, as_version=4)
    # The page shows the parameters once, with the values this run used: papermill's injected cell stays,
    # the defaults cell it overrides is removed from the rendered page (it stays in the chapter's source).
    if any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells):
        for cell in nb.cells:
            tags = cell.metadata.setdefault("tags", [])
            if "parameters" in tags and "remove-cell" not in tags:
                tags.append("remove-cell")
            # The values stay one click away; the first code a reader sees is the chapter's topic.
            if "injected-parameters" in tags and "hide-input" not in tags:
                tags.append("hide-input")
    nb.metadata[build_inputs.METADATA_KEY] = inputs
    return nb


def execute(md: Path, out: Path, params: dict, env_extra: dict, *, label: str | None = None) -> float:
    """Run one chapter with papermill in this process; return the wall time in seconds.

    The kernel inherits ``env_extra`` (on top of this process's environment, restored afterwards).
    """
    import nbformat

    nb = prepare(md, params, {})
    tmp = out.with_suffix(".input.ipynb")
    nbformat.write(nb, tmp)
    saved = {k: os.environ.get(k) for k in env_extra}
    try:
        return _run_papermill(tmp, out, md.parent, env_extra, label or md.stem)
    finally:
        tmp.unlink(missing_ok=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_papermill(source: Path, out: Path, cwd: Path, env_extra: dict, label: str) -> float:
    import papermill as pm

    os.environ.update(env_extra)  # the kernel inherits this process's environment (a worker of its own)
    state = {"cell": 0, "cells": None, "done": False}
    t0 = time.perf_counter()

    def on_cell_start(cell, cell_index):  # nbclient hook; papermill passes it through
        state["cell"] = cell_index + 1

    def heartbeat() -> None:
        while not state["done"]:
            time.sleep(1.0)
            elapsed = time.perf_counter() - t0
            if not state["done"] and elapsed >= HEARTBEAT_S and int(elapsed) % int(HEARTBEAT_S) == 0:
                print(f"[book] {label}: cell {state['cell']}/{state['cells']}, {elapsed:.0f} s", flush=True)

    import nbformat

    state["cells"] = len(nbformat.read(source, as_version=4).cells)
    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    try:
        pm.execute_notebook(
            str(source),
            str(out),
            parameters=None,  # already injected by prepare(), so the cache sees them
            cwd=str(cwd),
            kernel_name="python3",
            progress_bar=False,
            request_save_on_cell_execute=False,
            on_cell_start=on_cell_start,
            # papermill fails a cell whose output arrives more than iopub_timeout after its reply (nbclient's
            # default, 4 s, is exceeded on a loaded 2-core machine: seen with a load average of 20).
            iopub_timeout=120,
            # The kernel's own log is not the chapter's: its start-up notice (TCP without encryption, for a
            # kernel on this machine), and the ERROR "KeyboardInterrupt caught in kernel." that ipykernel
            # logs when jupyter_client's shutdown_kernel() interrupts it (it always does, first) while it is
            # still answering a message. A chapter's own errors reach the build through papermill (the
            # failing cell and its traceback), so the build's output keeps to progress and real errors.
            extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
        )
    finally:
        state["done"] = True
    return time.perf_counter() - t0


def _worker(name: str, source: str, out: str, cwd: str, env_extra: dict) -> tuple[str, float, str | None]:
    """Execute one prepared chapter in a worker process; return (name, seconds, failure message or None)."""
    from papermill.exceptions import PapermillExecutionError

    t0 = time.perf_counter()
    try:
        seconds = _run_papermill(Path(source), Path(out), Path(cwd), env_extra, name)
    except PapermillExecutionError as err:
        return name, time.perf_counter() - t0, report_failure(name, err) + f"\n    partly executed: {out}"
    except Exception as err:  # noqa: BLE001 - a kernel that dies or cannot start: still name the chapter
        return name, time.perf_counter() - t0, f"Chapter '{name}' failed: {type(err).__name__}: {err}"
    return name, seconds, None


def report_failure(chapter: str, err: Exception) -> str:
    """One clear message: which chapter, which cell, what error."""
    cell = getattr(err, "exec_count", None)
    index = getattr(err, "cell_index", None)
    where = (
        f"cell {index}" + (f" (execution count {cell})" if cell is not None else "")
        if index is not None
        else "a cell"
    )
    ename, evalue = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", str(err))
    source = (getattr(err, "source", "") or "").strip().splitlines()
    snippet = ("\n    " + "\n    ".join(source[:8])) if source else ""
    return f"Chapter '{chapter}' failed in {where}: {ename}: {evalue}{snippet}"


def stage(build: Path, files: list[str], executed: dict[str, Path]) -> Path:
    """Lay out a Jupyter Book source tree with executed notebooks in place of their Markdown sources.

    Files are copied only when their bytes changed, so Sphinx's incremental build re-reads only those pages.
    """
    src = build / "src"
    src.mkdir(parents=True, exist_ok=True)
    wanted: dict[Path, Path] = {src / n: ROOT / n for n in ("_config.yml", "_toc.yml")}
    for path in (ROOT / "book").rglob("*"):
        rel = path.relative_to(ROOT)
        if path.is_file() and path.suffix not in (".md", ".ipynb") and ".ipynb_checkpoints" not in rel.parts:
            wanted[src / rel] = path
    for f in files:
        wanted[(src / f).with_suffix(".ipynb" if f in executed else ".md")] = executed.get(
            f, ROOT / f"{f}.md"
        )
    # Remove staged files that are no longer wanted; never descend into the symlinked folders (the package!).
    for folder, _dirs, names in os.walk(src, followlinks=False):
        for name in names:
            target = Path(folder) / name
            if target not in wanted and not target.is_symlink():
                target.unlink()
    for target, origin in wanted.items():
        if not target.exists() or target.read_bytes() != origin.read_bytes():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target)
    config = repository_config((ROOT / "_config.yml").read_text(encoding="utf-8"))
    if (src / "_config.yml").read_text(encoding="utf-8") != config:
        (src / "_config.yml").write_text(config, encoding="utf-8")
    # literalinclude paths in the chapters point at ../companion; the local Sphinx extension lives in tools;
    # MathJax (make mathjax) is served from _static so maths renders offline.
    links = {src / "companion": ROOT / "companion", src / "_ext": ROOT / "tools" / "sphinx_local"}
    mathjax = Path(os.environ.get("DLTRICKS_MATHJAX") or ROOT / ".venv" / "share" / "mathjax")
    if (mathjax / "tex-mml-chtml.js").exists():
        links[src / "_static" / "mathjax"] = mathjax.resolve()
    else:
        print(f"[book] no MathJax in {mathjax} (make mathjax): pages will load it from its CDN", flush=True)
    for link, target in links.items():
        if not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target, target_is_directory=True)
    return src


def repository_config(config: str, url: str | None = None) -> str:
    """The book's configuration with repository links when a repository URL is set, unchanged otherwise.

    One setting, ``$DLTRICKS_REPOSITORY_URL`` (``make book REPOSITORY_URL=https://github.com/...``), turns on
    the repository and issue buttons of a published build; a local build without it shows none. Launch
    (Binder, Colab) and edit buttons stay off either way: they would point at the executed ``.ipynb`` pages
    of the staged tree, which the repository does not hold (its chapters are ``.md``): they would be broken.
    """
    import yaml

    url = url if url is not None else os.environ.get("DLTRICKS_REPOSITORY_URL", "")
    if not url:
        return config
    data = yaml.safe_load(config)
    data["repository"] = {"url": url, "branch": "main"}
    data.setdefault("html", {}).update(use_repository_button=True, use_issues_button=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def run_chapters(plan: list[dict], jobs: int, cache, results: Path) -> list[str]:
    """Execute the planned chapters, ``jobs`` at a time; cache each success. Returns the failure messages."""
    failures: list[str] = []
    if not plan:
        return failures
    ctx = __import__("multiprocessing").get_context("fork" if sys.platform != "win32" else "spawn")
    with cf.ProcessPoolExecutor(max_workers=max(1, min(jobs, len(plan))), mp_context=ctx) as pool:
        futures = {
            pool.submit(_worker, p["name"], str(p["source"]), str(p["out"]), str(p["cwd"]), p["env"]): p
            for p in plan
        }
        for future in cf.as_completed(futures):
            p = futures[future]
            name, seconds, failure = future.result()
            p["source"].unlink(missing_ok=True)
            if failure:
                failures.append(failure)
                # Keep what it recorded before failing, marked as such.
                _annotate_results(results / f"{name}.json", seconds, "failed")
                print(f"[book] {name}: FAILED after {seconds:.0f} s", flush=True)
                continue
            _annotate_results(results / f"{name}.json", seconds, "executed")
            build_inputs.store(cache, p["out"], results / f"{name}.json", seconds)
            print(f"[book] {name}: {seconds:.1f} s", flush=True)
    return failures


def print_times(results: Path, order: list[str]) -> None:
    """Each chapter's execution time and where its results came from, in book order, with the total."""
    rows, total = [], 0.0
    for name in order:
        path = results / f"{name}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        build = data.get("build", {})
        seconds = float(data.get("execution_s", data.get("wall_time_s", 0.0)))
        source = build.get("source")
        total += seconds if source in ("executed", "failed") else 0.0
        how = {
            "executed": "executed",
            "cache": f"cache (run started {data.get('started', '?')})",
            "failed": "FAILED: partial results",
        }.get(source, f"INCOMPLETE: a run started {data.get('started', '?')} did not finish (killed?)")
        rows.append(f"[book]   {name:<16} {seconds:7.1f} s  {how}")
    print("[book] chapter times:\n" + "\n".join(rows) + f"\n[book]   executed in this build: {total:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--profile", default=os.environ.get("PROFILE") or "auto", choices=["auto", "smoke", "quick", "full"]
    )
    ap.add_argument("--device", default=os.environ.get("DEVICE") or "auto")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("SEED") or 0))
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("JOBS") or os.cpu_count() or 1))
    ap.add_argument("--force", action="store_true", help="execute every chapter, ignoring the cache")
    ap.add_argument("--only", nargs="*", default=None, help="execute only these chapters (file stems)")
    ap.add_argument("--no-html", action="store_true", help="execute the chapters but do not render")
    ap.add_argument("--times", action="store_true", help="print the chapter times of an existing build")
    ap.add_argument("--build-dir", default=str(ROOT / "_build"))
    args = ap.parse_args(argv)

    build = Path(args.build_dir).resolve()
    results = build / "results"
    files = toc_files(ROOT / "_toc.yml")
    notebooks = [f for f in files if is_notebook(ROOT / f"{f}.md")]
    # The execution report reads every chapter's results, so it runs last.
    notebooks.sort(key=lambda f: Path(f).name == REPORT)
    if args.times:
        print_times(results, [Path(f).name for f in notebooks])
        return 0

    sys.path.insert(0, str(ROOT / "companion"))
    from dltricks.data import DataNotFoundError, locate_fashion_mnist
    from dltricks.keras import QUIET_TENSORFLOW_ENV
    from dltricks.threads import thread_budget, thread_env

    profile = resolve_profile(args.profile)
    threads = thread_budget()
    print(
        f"[book] profile={profile} device={args.device} seed={args.seed} jobs={args.jobs} "
        f"threads/chapter={threads}; chapters: " + ", ".join(Path(f).name for f in notebooks),
        flush=True,
    )
    try:
        found = locate_fashion_mnist()
    except (DataNotFoundError, ValueError) as err:
        print(f"[book] Fashion-MNIST is not available:\n{err}", file=sys.stderr)
        return 1
    print(f"[book] Fashion-MNIST: {Path(next(iter(found.values()))).parent}", flush=True)

    (build / "executed").mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    env = {
        "DLTRICKS_RESULTS_DIR": str(results),
        "DLTRICKS_PROGRESS": "0",
        "PYTHONHASHSEED": str(args.seed),
        **QUIET_TENSORFLOW_ENV,
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    } | thread_env(threads)
    cache = build_inputs.open_cache(build / "cache")
    executed: dict[str, Path] = {}
    failures: list[str] = []

    chapters = [f for f in notebooks if Path(f).name != REPORT]
    reports = [f for f in notebooks if Path(f).name == REPORT]
    for group in (chapters, reports):  # the report after every chapter's results exist
        plan = []
        for f in group:
            name = Path(f).name
            md, out = ROOT / f"{f}.md", build / "executed" / f"{f}.ipynb"
            out.parent.mkdir(parents=True, exist_ok=True)
            if args.only is not None and name not in args.only:
                if out.exists():
                    executed[f] = out
                continue
            # The report only reads the other chapters' results: it takes no parameters.
            params = {} if name == REPORT else {"PROFILE": profile, "DEVICE": args.device, "SEED": args.seed}
            inputs = build_inputs.describe(md, params, env, results if name == REPORT else None)
            nb = prepare(md, params, inputs)
            if not args.force and build_inputs.restore(cache, nb, out, results / f"{name}.json"):
                _annotate_results(results / f"{name}.json", None, "cache")
                executed[f] = out
                print(f"[book] {name}: unchanged, outputs from the cache", flush=True)
                continue
            source = out.with_suffix(".input.ipynb")
            import nbformat

            nbformat.write(nb, source)
            plan.append({"name": name, "source": source, "out": out, "cwd": md.parent, "env": env})
            executed[f] = out
        if plan:
            print(
                f"[book] executing {', '.join(p['name'] for p in plan)} ({args.jobs} at a time)", flush=True
            )
        failures += run_chapters(plan, args.jobs, cache, results)
        if failures:
            break

    print_times(results, [Path(f).name for f in notebooks])
    if failures:
        for message in failures:
            print("[book] " + message, file=sys.stderr)
        print(f"[book] {len(failures)} chapter(s) failed; the others' results are kept", file=sys.stderr)
        return 1
    if args.no_html:
        return 0
    return render(build, files, executed)


def render(build: Path, files: list[str], executed: dict[str, Path]) -> int:
    """Render the staged tree with Jupyter Book 1 (warnings are errors); copy the site to ``<build>/html``."""
    src = stage(build, files, executed)
    jb = build / "jb"
    cmd = [
        str(Path(sys.executable).parent / "jupyter-book"),
        "build",
        str(src),
        "--path-output",
        str(jb),
        "--builder",
        "html",
        "--keep-going",
        "-W",
    ]
    print("[book] rendering with Jupyter Book ...", flush=True)
    t0 = time.perf_counter()
    if subprocess.run(cmd, cwd=src).returncode != 0:
        print("[book] jupyter-book build failed (see the warnings above)", file=sys.stderr)
        return 1
    html = build / "html"
    if html.exists():
        shutil.rmtree(html)
    shutil.copytree(jb / "_build" / "html", html)
    print(f"[book] rendered in {time.perf_counter() - t0:.0f} s; open {html / 'index.html'}", flush=True)
    return 0


def _annotate_results(path: Path, seconds: float | None, source: str) -> None:
    """Record beside the chapter's results how this build got them: executed now (and papermill's wall time,
    kernel start included), restored from the cache (keeping the time of the run that made them), or
    ``"failed"`` (what the chapter recorded before its error).

    A chapter rewrites its JSON after every record and knows nothing of the build, so results without this
    annotation come from a run that never finished: the build was killed, or the chapter is still running.
    """
    if not path.exists():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    if seconds is not None:
        data["execution_s"] = round(seconds, 1)
    data["build"] = {"source": source}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
