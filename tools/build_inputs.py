"""What a chapter's executed outputs depend on, and the jupyter-cache that keeps them.

The cache is jupyter-cache (the one myst-nb uses). It keys an executed notebook by the hash of its code cells
and selected metadata, and can merge a cached execution's outputs into a notebook whose prose has changed. By
itself it cannot see what the code *imports* or the machine it ran on, so :func:`describe` writes those inputs
into the notebook's metadata under :data:`METADATA_KEY`, and :class:`BookCache` hashes that key too:

* the parameters papermill injects (they are a code cell, so they are in the code hash as well);
* the source of every ``dltricks`` module the chapter imports, followed transitively through the package;
* the environment variables that change results (thread budget, hash seed, Keras backend);
* the versions of Python and of the libraries the chapters compute with, and whether a GPU is visible;
* for the execution report, the other chapters' results files.

A change to any of these executes the chapter again; a prose-only edit does not.
"""

from __future__ import annotations

import ast
import hashlib
import platform
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "companion" / "dltricks"
METADATA_KEY = "dltricks_build_inputs"
RESULT_ENV = (
    "DLTRICKS_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "PYTHONHASHSEED",
    "KERAS_BACKEND",
)
DISTRIBUTIONS = ("torch", "numpy", "scipy", "scikit-learn", "matplotlib", "tensorflow-cpu", "tensorflow",
                 "keras", "papermill", "ipykernel", "nbclient", "jupytext", "myst-nb")  # fmt: skip


def module_file(module: str, package: Path = PACKAGE) -> Path | None:
    """The source file of ``dltricks.a.b`` (a module or a package's ``__init__``), or None."""
    parts = module.split(".")[1:]
    base = package.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(source: str) -> set[str]:
    """``dltricks`` modules named by import statements in Python source (``from dltricks import a`` counts
    ``dltricks.a`` when ``a`` is a submodule). IPython magics and shell lines are skipped."""
    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    found: set[str] = set()
    try:
        tree = ast.parse(code)
    except SyntaxError:  # the chapter will fail on it when executed, naming the cell
        return found
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "dltricks"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "dltricks":
                found.add(node.module)
                found |= {
                    f"{node.module}.{a.name}" for a in node.names if module_file(f"{node.module}.{a.name}")
                }
    return found


def chapter_code(md: Path) -> list[str]:
    """The code cells of a Jupytext chapter."""
    import jupytext

    nb = jupytext.read(md)
    return [cell.source for cell in nb.cells if cell.cell_type == "code"]


def package_closure(modules: set[str], package: Path = PACKAGE) -> dict[str, str]:
    """Every package file the given modules need, with its SHA-256: the modules, the packages that contain
    them, and what they import from ``dltricks`` (absolute or relative), transitively."""
    todo = set(modules)
    seen: dict[str, str] = {}
    while todo:
        module = todo.pop()
        parts = module.split(
            "."
        )  # importing dltricks.a.b runs dltricks/__init__ and dltricks/a/__init__ first
        todo |= {".".join(parts[:i]) for i in range(1, len(parts))}
        path = module_file(module, package)
        if path is None:
            continue
        rel = str(path.relative_to(package.parent))
        if rel in seen:
            continue
        seen[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                todo |= {a.name for a in node.names if a.name.split(".")[0] == "dltricks"}
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, node.module, node.level, is_package)
                if base.split(".")[0] != "dltricks":
                    continue
                todo.add(base)
                todo |= {f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}", package)}
    return dict(sorted(seen.items()))


def _absolute(module: str, name: str | None, level: int, is_package: bool) -> str:
    if level == 0:
        return name or ""
    parts = module.split(".")
    anchor = parts if is_package else parts[:-1]
    anchor = anchor[: len(anchor) - (level - 1)]
    return ".".join(anchor + ([name] if name else []))


def versions() -> dict[str, str]:
    """Python's version and those of the installed libraries that chapters compute with."""
    found = {"python": platform.python_version()}
    for dist in DISTRIBUTIONS:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def describe(md: Path, params: dict, env: dict, results: Path | None = None) -> dict:
    """Everything besides its code cells that a chapter's executed outputs depend on (JSON-serializable)."""
    import torch

    inputs = {
        "params": params,
        "env": {k: env[k] for k in RESULT_ENV if k in env},
        "package": package_closure(set().union(*map(imported_modules, chapter_code(md)))),
        "versions": versions(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if results is not None:  # the execution report: the other chapters' results are its input
        inputs["results"] = {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(results.glob("*.json"))
            if p.stem != md.stem
        }
    return inputs


# Tags that only change how a cell is shown (Jupyter Book / myst-nb): the cell runs the same with or without
# them, so hiding a set-up cell re-renders the page from the cache instead of executing the chapter again.
DISPLAY_TAGS = frozenset(
    f"{verb}-{part}"
    for verb in ("hide", "remove")
    for part in ("input", "output", "cell", "stderr", "stdout")
)


def execution_tags(tags) -> list[str]:
    """The tags of a cell that can change what its execution does (``parameters``, ``raises-exception``,
    nbval's ...), in their order: :data:`DISPLAY_TAGS` dropped."""
    return [t for t in tags if t not in DISPLAY_TAGS]


def open_cache(path: Path):
    """A jupyter-cache at ``path`` that also hashes :data:`METADATA_KEY` and only the cell tags that matter
    to execution (:func:`execution_tags`)."""
    import copy

    from jupyter_cache.cache.main import JupyterCacheBase

    class BookCache(JupyterCacheBase):
        def create_hashed_notebook(
            self, nb, nb_metadata=("kernelspec", METADATA_KEY), cell_metadata=("tags",)
        ):
            # papermill adds execution metadata to every cell it runs: hash only what the author wrote.
            nb = copy.deepcopy(nb)
            for cell in nb.cells:
                if "tags" in cell.metadata:
                    kept = execution_tags(cell.metadata["tags"])
                    if kept:
                        cell.metadata["tags"] = kept
                    else:  # a cell whose only tags were display tags hashes as one without tags
                        del cell.metadata["tags"]
            return super().create_hashed_notebook(nb, nb_metadata=nb_metadata, cell_metadata=cell_metadata)

    path.mkdir(parents=True, exist_ok=True)
    return BookCache(str(path))


def restore(cache, nb, out: Path, results_json: Path) -> bool:
    """If the cache holds an execution of ``nb``, write it (with ``nb``'s current prose) to ``out``, put its
    results JSON back at ``results_json`` and return True; otherwise return False."""
    import nbformat

    try:
        # The cells keep the current metadata (a display tag added since), with papermill's records of the
        # run that made the outputs.
        pk, merged = cache.merge_match_into_notebook(nb, nb_meta=None, cell_meta=("papermill", "execution"))
    except KeyError:
        return False
    bundle = cache.get_cache_bundle(pk)  # public API: the record, the notebook and the artifacts
    artifacts = {str(rel): handle.read() for rel, handle in bundle.artifacts}
    wanted = bundle.record.data.get("results")
    if wanted and wanted not in artifacts:
        return False  # an execution without the results it wrote is of no use to the book
    merged.metadata[METADATA_KEY] = nb.metadata[METADATA_KEY]
    nbformat.write(merged, out)
    if wanted:
        results_json.parent.mkdir(parents=True, exist_ok=True)
        results_json.write_bytes(artifacts[wanted])
    return True


def store(cache, executed: Path, results_json: Path, seconds: float) -> None:
    """Cache an executed chapter with its results JSON (replacing an older execution of the same inputs)."""
    import nbformat
    from jupyter_cache.base import CacheBundleIn
    from jupyter_cache.cache.main import NbArtifacts

    nb = nbformat.read(executed, as_version=4)
    has_results = results_json.exists()  # the execution report records none
    artifacts = NbArtifacts([str(results_json)], in_folder=str(results_json.parent)) if has_results else None
    data = {"execution_s": round(seconds, 1), "results": results_json.name if has_results else None}
    bundle = CacheBundleIn(nb, str(executed), artifacts=artifacts, data=data)
    cache.cache_notebook_bundle(bundle, check_validity=False, overwrite=True)
