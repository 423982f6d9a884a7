"""Execute every chapter with papermill, then render the book with Jupyter Book 1.

    python tools/build_book.py [--profile auto|smoke|quick|full] [--device auto|cpu|cuda] [--seed 0]
                               [--only CHAPTER ...] [--no-html] [--build-dir _build]

Steps: check that Fashion-MNIST can be found; execute each notebook page of ``_toc.yml`` (Jupytext MyST
Markdown, converted in memory) with papermill into ``<build>/executed/``; stage the executed notebooks and
the plain pages into ``<build>/src``; run ``jupyter-book build`` with execution off; copy the site to
``<build>/html``. A failing cell stops the build with the chapter's name, the cell and the error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
    """A page is a notebook when its front matter declares a Jupytext kernelspec."""
    head = md.read_text(encoding="utf-8")[:2000]
    return head.startswith("---") and "kernelspec:" in head


def resolve_profile(profile: str) -> str:
    if profile != "auto":
        return profile
    import torch

    return "full" if torch.cuda.is_available() else "quick"


def execute(md: Path, out: Path, params: dict, env_extra: dict) -> float:
    """Run one chapter with papermill; return the wall time in seconds."""
    import jupytext
    import papermill as pm

    nb = jupytext.read(md)
    nb.metadata.setdefault(
        "kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"}
    )
    tmp = out.with_suffix(".input.ipynb")
    jupytext.write(nb, tmp, fmt="ipynb")
    saved = {k: os.environ.get(k) for k in env_extra}
    os.environ.update(env_extra)  # the kernel inherits this process's environment
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(
            str(tmp),
            str(out),
            parameters=params,
            cwd=str(md.parent),
            kernel_name="python3",
            progress_bar=False,
            request_save_on_cell_execute=False,
        )
    finally:
        tmp.unlink(missing_ok=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return time.perf_counter() - t0


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
    """Lay out a Jupyter Book source tree with executed notebooks in place of their Markdown sources."""
    src = build / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "book", src / "book", ignore=shutil.ignore_patterns("*.md", "*.ipynb", ".ipynb_checkpoints")
    )
    for f in files:
        target = src / f
        target.parent.mkdir(parents=True, exist_ok=True)
        if f in executed:
            shutil.copy2(executed[f], target.with_suffix(".ipynb"))
        else:
            shutil.copy2(ROOT / f"{f}.md", target.with_suffix(".md"))
    # literalinclude paths in the chapters point at ../companion: keep them valid in the staged tree.
    (src / "companion").symlink_to(ROOT / "companion", target_is_directory=True)
    return src


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--profile", default=os.environ.get("PROFILE") or "auto", choices=["auto", "smoke", "quick", "full"]
    )
    ap.add_argument("--device", default=os.environ.get("DEVICE") or "auto")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("SEED") or 0))
    ap.add_argument("--only", nargs="*", default=None, help="execute only these chapters (file stems)")
    ap.add_argument("--no-html", action="store_true", help="execute the chapters but do not render")
    ap.add_argument("--build-dir", default=str(ROOT / "_build"))
    args = ap.parse_args(argv)

    build = Path(args.build_dir).resolve()
    profile = resolve_profile(args.profile)
    files = toc_files(ROOT / "_toc.yml")
    notebooks = [f for f in files if is_notebook(ROOT / f"{f}.md")]
    # The execution report reads every chapter's results, so it runs last.
    notebooks.sort(key=lambda f: Path(f).name == "report")
    print(
        f"[book] profile={profile} device={args.device} seed={args.seed}; chapters: "
        + ", ".join(Path(f).name for f in notebooks),
        flush=True,
    )

    sys.path.insert(0, str(ROOT / "companion"))
    from dltricks.data import DataNotFoundError, locate_fashion_mnist

    try:
        found = locate_fashion_mnist()
    except (DataNotFoundError, ValueError) as err:
        print(f"[book] Fashion-MNIST is not available:\n{err}", file=sys.stderr)
        return 1
    print(f"[book] Fashion-MNIST: {Path(next(iter(found.values()))).parent}", flush=True)

    results = build / "results"
    (build / "executed").mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    env = {
        "DLTRICKS_RESULTS_DIR": str(results),
        "DLTRICKS_PROGRESS": "0",
        "PYTHONHASHSEED": str(args.seed),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERAS_BACKEND": "tensorflow",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    executed: dict[str, Path] = {}
    from papermill.exceptions import PapermillExecutionError

    for f in notebooks:
        name = Path(f).name
        out = build / "executed" / f"{f}.ipynb"
        out.parent.mkdir(parents=True, exist_ok=True)
        if args.only is not None and name not in args.only:
            if out.exists():
                executed[f] = out
                continue
        print(f"[book] executing {name} ...", flush=True)
        # The report only reads the other chapters' results: it takes no parameters.
        params = {} if name == "report" else {"PROFILE": profile, "DEVICE": args.device, "SEED": args.seed}
        try:
            seconds = execute(ROOT / f"{f}.md", out, params, env)
        except PapermillExecutionError as err:
            print("[book] " + report_failure(name, err), file=sys.stderr)
            print(f"[book] the partly executed notebook is {out}", file=sys.stderr)
            return 1
        executed[f] = out
        _add_execution_time(results / f"{name}.json", seconds)
        print(f"[book] {name}: {seconds:.1f} s", flush=True)

    if args.no_html:
        return 0
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
        "--all",
    ]
    print("[book] rendering with Jupyter Book ...", flush=True)
    if subprocess.run(cmd, cwd=src).returncode != 0:
        print("[book] jupyter-book build failed (see the warnings above)", file=sys.stderr)
        return 1
    html = build / "html"
    if html.exists():
        shutil.rmtree(html)
    shutil.copytree(jb / "_build" / "html", html)
    print(f"[book] done: open {html / 'index.html'}", flush=True)
    return 0


def _add_execution_time(path: Path, seconds: float) -> None:
    """Store papermill's wall time (kernel start included) beside the chapter's own record."""
    if not path.exists():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    data["execution_s"] = round(seconds, 1)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
