"""The prepared GPU run, step by step; ``tools/gpu-run.sh`` installs what is missing and calls this.

    python tools/gpu_run.py --out OUT [--budget-s 540] [--device cuda] [--full-profile full]
                            [--quick-profile quick] [--chapters a,b,...] [--jobs 3] [--full-limit-s 300]

Everything lands in ``OUT`` as it goes, so a run cut off at its time limit still returns what finished:

1. ``environment.json``: Python, torch, CUDA, the GPU, the commit, the date.
2. ``preflight.ipynb``: a three-cell notebook through papermill and the ``python3`` kernel (glue, torch):
   if the notebook stack is broken nothing else could run, and this says so within seconds.
3. The GPU chapter in the full profile, alone on the device (its timings are the point): the notebook is
   saved after every cell to ``full/executed/gpu.ipynb`` and the chapter writes ``full/results/gpu.json``
   after every record; then its claim tests (``full/claims-gpu.txt`` and ``.xml``).
4. Every chapter in the quick profile on the device, ``--jobs`` at a time, the chapters whose published
   numbers were never measured first (``quick/...``), each followed by its claim tests.
5. ``timing.md`` and ``timing.json``: one row per step (status, seconds, claim tests passed/failed),
   rewritten after every step.

A step still running at ``--budget-s`` is ended (its partial notebook and results stay, marked failed); a
step not started by then is listed as not run. The exit code is 0 when every step ran and passed.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import importlib.util
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
# Most valuable first: the chapters whose issues ended blocked on a GPU run; the GPU chapter's quick profile
# last (its full profile ran before them).
ORDER = ["transfer", "distillation", "recipe", "optimizers", "gradients", "generalization", "dropout", "gpu"]
PREFLIGHT = [
    "import platform, sys\nprint(platform.python_version(), sys.executable)",
    "from myst_nb import glue\nglue('preflight', 1, display=False)",
    "import importlib.util\nprint('torch', 'found' if importlib.util.find_spec('torch') else 'MISSING')",
]


class Table:
    """The timing table: rows kept in memory, written to ``timing.md`` and ``timing.json`` on every change."""

    def __init__(self, out: Path) -> None:
        self.out, self.rows, self.t0 = out, [], time.monotonic()

    def add(self, step: str, profile: str, status: str, seconds: float, claims: str = "") -> None:
        self.rows.append(
            {
                "step": step,
                "profile": profile,
                "status": status,
                "seconds": round(seconds, 1),
                "claims": claims,
                "at_s": round(time.monotonic() - self.t0, 1),
            }
        )
        lines = [
            "| step | profile | status | seconds | claim tests | done at (s) |",
            "|---|---|---|---|---|---|",
        ]
        keys = ("step", "profile", "status", "seconds", "claims", "at_s")
        lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in self.rows]
        _atomic(self.out / "timing.md", "\n".join(lines) + "\n")
        _atomic(self.out / "timing.json", json.dumps(self.rows, indent=1))
        print(f"[gpu-run] {step} ({profile}): {status}, {seconds:.1f} s {claims}", flush=True)


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def environment(out: Path, device: str) -> dict:
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "executable": sys.executable,
        "device": device,
    }
    try:
        info["commit"] = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        info["commit"] = "unknown (no git)"
    try:
        import torch

        info |= {"torch": torch.__version__, "cuda": torch.version.cuda, "gpus": torch.cuda.device_count()}
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        info["torch"] = "missing"
    _atomic(out / "environment.json", json.dumps(info, indent=1))
    return info


def preflight(out: Path) -> tuple[bool, str]:
    """Run a tiny notebook with papermill on the ``python3`` kernel: ``(ok, what it printed or why not)``."""
    try:
        import nbformat
        import papermill as pm

        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in PREFLIGHT])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        raw = out / ".preflight.input.ipynb"
        nbformat.write(nb, raw)
        pm.execute_notebook(
            str(raw), str(out / "preflight.ipynb"), kernel_name="python3", progress_bar=False, cwd=str(ROOT)
        )
        raw.unlink()
        done = nbformat.read(out / "preflight.ipynb", as_version=4)
        text = "; ".join(
            o.get("text", "").strip() for c in done.cells for o in c.get("outputs", []) if "text" in o
        )
        return True, text
    except Exception as err:  # noqa: BLE001 - any failure of the stack is the answer
        return False, f"{type(err).__name__}: {err}"


def execute(md: Path, nb_out: Path, results: Path, params: dict) -> None:
    """One chapter, in this (child) process: papermill, the notebook saved after every cell."""
    import nbformat
    import papermill as pm

    import build_book
    from dltricks.keras import QUIET_TENSORFLOW_ENV
    from dltricks.threads import thread_budget, thread_env

    nb = build_book.prepare(md, params, {})
    source = nb_out.with_suffix(".input.ipynb")
    nbformat.write(nb, source)
    os.environ.update(
        {
            "DLTRICKS_RESULTS_DIR": str(results),
            "DLTRICKS_PROGRESS": "0",
            "PYTHONHASHSEED": str(params["SEED"]),
            **QUIET_TENSORFLOW_ENV,
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        }
        | thread_env(thread_budget())
    )
    try:
        pm.execute_notebook(
            str(source),
            str(nb_out),
            cwd=str(md.parent),
            kernel_name="python3",
            progress_bar=False,
            request_save_on_cell_execute=True,
            iopub_timeout=120,
        )
    finally:
        source.unlink(missing_ok=True)


def run_chapter(
    name: str, profile: str, base: Path, args: argparse.Namespace, deadline: float
) -> tuple[str, float]:
    """Execute ``name`` in a child process until ``deadline``, into ``base``; ``(status, seconds)``."""
    import build_book

    (base / "executed").mkdir(parents=True, exist_ok=True)
    (base / "results").mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_execute",
        name,
        profile,
        args.device,
        str(args.seed),
        str(base),
    ]
    t0 = time.monotonic()
    with open(base / f"log-{name}.txt", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            status = "ok" if code == 0 else f"failed (exit {code}; see log-{name}.txt)"
        except subprocess.TimeoutExpired:  # the whole group: papermill and its kernel
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            status = "cut off at the time limit (partial notebook and results kept)"
    seconds = time.monotonic() - t0
    build_book._annotate_results(
        base / "results" / f"{name}.json", seconds, "executed" if status == "ok" else "failed"
    )
    return status, seconds


def claims(name: str, base: Path, timeout: float) -> str:
    """Run the claim tests that read ``name``'s results; a short summary (the report is kept beside them).

    Only the tests marked ``book`` (the claim tests) of the files that read these results: a unit-test file
    that also checks one recorded number does not bring its other, slow tests along.
    """
    files = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").glob("test_*.py")
        if f'results("{name}")' in p.read_text(encoding="utf-8")
    )
    if not files:
        return "none"
    if not (base / "results" / f"{name}.json").exists():
        return "not run (no results)"
    if importlib.util.find_spec("pytest") is None:
        return "not run: no pytest here (pack it with device-prep.sh pytest)"
    junit = f"--junitxml={base}/claims-{name}.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "book", junit, *files]
    env = {**os.environ, "DLTRICKS_BUILD_DIR": str(base)}
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(1.0, timeout)
        )
    except subprocess.TimeoutExpired:
        return "cut off at the time limit"
    (base / f"claims-{name}.txt").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    counts = re.findall(
        r"(\d+) (passed|failed|error|errors|skipped)", proc.stdout.splitlines()[-1] if proc.stdout else ""
    )
    return ", ".join(f"{n} {what}" for n, what in counts) or f"exit {proc.returncode}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budget-s", type=float, default=540.0, help="the whole run, install excluded")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full-profile", default="full")
    ap.add_argument("--quick-profile", default="quick")
    ap.add_argument("--full", default="gpu", help="chapters also run in the full profile, first")
    ap.add_argument("--chapters", default=",".join(ORDER), help="chapters run in the quick profile, in order")
    ap.add_argument(
        "--full-limit-s", type=float, default=300.0, help="at most this long for the full profile"
    )
    ap.add_argument("--jobs", type=int, default=3, help="quick chapters at once on the device")
    ap.add_argument("--preflight-only", action="store_true", help="stop after the preflight notebook")
    args = ap.parse_args(argv)
    args.full = [c for c in args.full.split(",") if c]
    chapters = [c for c in args.chapters.split(",") if c]
    unknown = [c for c in [*args.full, *chapters] if not (ROOT / "book" / f"{c}.md").exists()]
    if unknown:
        ap.error(f"no such chapters: {unknown}")
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    deadline = start + args.budget_s
    table = Table(args.out)
    info = environment(args.out, args.device)
    what = f"python {info['python']}, torch {info.get('torch')}, {info.get('gpu', 'no GPU')}"
    table.add("environment", "-", what, time.monotonic() - start)
    t = time.monotonic()
    ok, said = preflight(args.out)
    table.add("preflight notebook", "-", ("ok: " if ok else "FAILED: ") + said[:200], time.monotonic() - t)
    if not ok or args.preflight_only:
        return 0 if ok else 1
    if info.get("torch") == "missing":
        table.add("torch", "-", f"FAILED: {sys.executable} cannot import torch", 0.0)
        return 1
    failures = 0
    for name in args.full:  # alone on the device: their timings are the published ones
        limit = min(deadline, time.monotonic() + args.full_limit_s)
        status, seconds = run_chapter(name, args.full_profile, args.out / "full", args, limit)
        summary = claims(name, args.out / "full", deadline - time.monotonic())
        failures += status != "ok" or "failed" in summary or "error" in summary
        table.add(name, args.full_profile, status, seconds, summary)
    with cf.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {}
        for name in chapters:
            futures[pool.submit(_quick, name, args, deadline)] = name
        for future in cf.as_completed(futures):
            status, seconds, summary = future.result()
            failures += status != "ok" or "failed" in summary or "error" in summary
            table.add(futures[future], args.quick_profile, status, seconds, summary)
    table.add("total", "-", f"{failures} step(s) failed or cut off", time.monotonic() - start)
    return 1 if failures else 0


def _quick(name: str, args: argparse.Namespace, deadline: float) -> tuple[str, float, str]:
    if time.monotonic() >= deadline - 5:
        return "not run (time budget spent)", 0.0, ""
    status, seconds = run_chapter(name, args.quick_profile, args.out / "quick", args, deadline)
    return status, seconds, claims(name, args.out / "quick", deadline - time.monotonic())


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_execute":  # the child process of run_chapter
        name, profile, device, seed, base = sys.argv[2:7]
        params = {"PROFILE": profile, "DEVICE": device, "SEED": int(seed)}
        execute(
            ROOT / "book" / f"{name}.md",
            Path(base) / "executed" / f"{name}.ipynb",
            Path(base) / "results",
            params,
        )
        sys.exit(0)
    sys.exit(main())
