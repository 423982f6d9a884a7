"""What every chapter notebook shares: profiles, seeds, and recording measured numbers.

A chapter's prose never contains a typed-in result. Each measured number goes through :func:`record`, which

1. glues it into the notebook (myst-nb ``glue``), so the prose shows it through a ``glue:text`` role, and
2. writes it, with the run's profile, device, seeds and versions, to ``<build>/results/<chapter>.json``,
   where the chapter tests check the claims the prose makes. A chapter run outside the build (in JupyterLab)
   writes to ``_build/interactive/results`` instead, so exploring never replaces the book's results.

Values measured over several seeds are recorded as the list of per-seed values; the glued text is
``mean ± std`` (sample standard deviation) and the JSON keeps every value, so a test can recompute anything.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import numbers
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dltricks._checks import check_choice, check_int, check_type, fail

PROFILES = ("smoke", "quick", "full")
"""``quick``: about two minutes per chapter on two CPU cores; ``full``: the published sizes, for a GPU;
``smoke``: the smallest sizes that still run every cell, used by the nbval re-execution test."""

RESULTS_ENV = "DLTRICKS_RESULTS_DIR"

_current: Chapter | None = None


def pick(profile: str, **by_profile: Any) -> Any:
    """Return the value for ``profile``: ``pick(PROFILE, quick=3, full=5)``.

    A missing ``smoke`` entry falls back to ``quick``, so chapters only spell out what differs.
    """
    check_choice("profile", profile, PROFILES)
    if not by_profile:
        raise ValueError("`by_profile` must give at least one profile's value. Received: by_profile={}")
    if profile in by_profile:
        return by_profile[profile]
    if profile == "smoke" and "quick" in by_profile:
        return by_profile["quick"]
    raise ValueError(
        f"`by_profile` has no value for profile {profile!r}. Received: by_profile={by_profile!r}"
    )


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0.0 for a single value) of per-seed values."""
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        fail("values", "a non-empty sequence of numbers", values)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def format_value(value: Any, fmt: str = "{:.3g}", *, summary: str = "mean") -> str:
    """The text a reader sees: ``fmt`` applied to a number, or a summary of a sequence of numbers.

    ``summary="mean"`` shows ``mean ± std``; ``summary="median"`` shows ``median (range min to max)``, the
    summary for heavy-tailed quantities or ones that span orders of magnitude, where a mean and a standard
    deviation are dominated by one extreme value.
    """
    check_choice("summary", summary, ("mean", "median"))
    if isinstance(value, str):
        return value
    if _is_number(value):
        return fmt.format(value)
    if _is_number_sequence(value) and summary == "median":
        arr = np.asarray(value, dtype=float).ravel()
        med, lo, hi = (fmt.format(v) for v in (np.median(arr), arr.min(), arr.max()))
        return f"{med} (range {lo} to {hi})"
    if _is_number_sequence(value):
        m, s = mean_std(value)
        # A sign flag in fmt ("{:+.2f}") is for the mean; a spread has no sign.
        return f"{fmt.format(m)} ± {fmt.format(s).lstrip('+')}"
    fail("value", "a number, a string or a sequence of numbers", value, TypeError)
    return ""  # unreachable; keeps type checkers content


def default_results_dir() -> Path:
    """``$DLTRICKS_RESULTS_DIR`` (set by the build), else ``<book root>/_build/interactive/results``.

    The book root is found by walking up to ``_toc.yml``. A chapter run interactively (JupyterLab, another
    profile) records into the ``interactive`` folder, never into the results a build rendered the book from.
    """
    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV])
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").exists():
            return folder / "_build" / "interactive" / "results"
    return here / "_build" / "interactive" / "results"


class Chapter:
    """The record of one chapter's execution: parameters, environment and measured results.

    Args:
        name: the chapter's file stem, e.g. ``"generalization"``; names the JSON file.
        profile: ``"smoke"``, ``"quick"`` or ``"full"``.
        device: the device the chapter computes on (a name or ``torch.device``).
        seeds: the seeds whose runs are averaged.
        results_dir: where to write ``<name>.json`` (default :func:`default_results_dir`).
    """

    def __init__(
        self,
        name: str,
        *,
        profile: str,
        device: Any,
        seeds: Sequence[int],
        results_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        check_type("name", name, str, "a non-empty string")
        if not name or "/" in name:
            fail("name", "a non-empty file stem without '/'", name)
        check_choice("profile", profile, PROFILES)
        if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
            fail("seeds", "a non-empty sequence of integers", seeds, TypeError)
        self.name, self.profile, self.device = name, profile, str(device)
        self.seeds = [check_int("seeds[i]", s) for s in seeds]
        self.path = Path(results_dir or default_results_dir()) / f"{name}.json"
        self.results: dict[str, dict[str, Any]] = {}
        self._t0 = time.perf_counter()
        self.started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.commit = _git_commit()  # read once: the run belongs to the tree as it was when it started
        self._write()

    def record(
        self, name: str, value: Any, fmt: str = "{:.3g}", *, glue: bool = True, summary: str = "mean"
    ) -> None:
        """Store ``value`` as ``name``, glue its text into the notebook, rewrite the JSON.

        Returns nothing, so a cell that ends with a ``record`` call prints nothing on the page.

        Args:
            name: the glue key, which the prose shows through a ``glue:text`` role.
            value: a number, a string, or a sequence of per-seed numbers (shown as ``mean ± std``).
            fmt: a ``str.format`` pattern for numbers, e.g. ``"{:.1%}"`` or ``"{:.2f}"``.
            glue: also glue into the notebook (default); off for values only tests read.
            summary: how a sequence is shown: ``"mean"`` (``mean ± std``) or ``"median"``
                (``median (range min to max)``, for heavy-tailed quantities).
        """
        check_type("name", name, str, "a string")
        text = format_value(value, fmt, summary=summary)
        entry: dict[str, Any] = {"text": text}
        if _is_number_sequence(value) and not isinstance(value, str):
            values = [float(v) for v in np.asarray(value, dtype=float).ravel()]
            entry |= {"values": values, "mean": mean_std(values)[0], "std": mean_std(values)[1]}
        elif _is_number(value):
            entry["value"] = value.item() if hasattr(value, "item") else value
        else:
            entry["value"] = value
        self.results[name] = entry
        self._write()
        if glue:
            from myst_nb import glue as _glue  # imported late: the package works without the book tools

            _glue(name, text, display=False)

    def metadata(self) -> dict[str, Any]:
        """Profile, device, seeds, versions, start date, commit and wall time so far."""
        return {
            "chapter": self.name,
            "profile": self.profile,
            "device": self.device,
            "device_name": _device_name(self.device),
            "seeds": self.seeds,
            "threads": _torch_threads(),
            "started": self.started,
            "wall_time_s": round(time.perf_counter() - self._t0, 2),
            "commit": self.commit,
            "versions": _versions(),
        }

    def _write(self) -> None:
        payload = self.metadata() | {"results": self.results}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Atomic: a reader (or a crash) never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            # NaN and inf become null: json.dump writes floats itself (``default`` never sees them), as bare
            # NaN/Infinity, which is not JSON; allow_nan=False makes any that slipped through an error.
            safe = _json_safe(payload)
            json.dump(safe, fh, indent=2, sort_keys=False, default=_json_default, allow_nan=False)
        os.replace(tmp, self.path)


def start_chapter(name: str, *, profile: str, device: Any, seeds: Sequence[int], **kwargs: Any) -> Chapter:
    """Begin recording chapter ``name``; later :func:`record` calls go to it.

    Also applies the book's thread budget (:func:`dltricks.threads.limit_threads`, ``$DLTRICKS_THREADS``,
    default 1), so a chapter run in Jupyter computes with the same threads as the build and gives its numbers.
    """
    global _current
    from dltricks.threads import limit_threads

    limit_threads()
    _current = Chapter(name, profile=profile, device=device, seeds=seeds, **kwargs)
    return _current


def record(name: str, value: Any, fmt: str = "{:.3g}", *, glue: bool = True, summary: str = "mean") -> None:
    """Record ``value`` in the current chapter (see :meth:`Chapter.record`).

    Raises:
        RuntimeError: if no chapter is being recorded.
    """
    if _current is None:
        raise RuntimeError("no chapter is being recorded: call dltricks.book.start_chapter(...) first")
    _current.record(name, value, fmt, glue=glue, summary=summary)


def record_comparison(
    name: str,
    treatment: Sequence[float] | np.ndarray,
    baseline: Sequence[float] | np.ndarray,
    fmt: str = "{:+.3g}",
    *,
    higher_is_better: bool = True,
    n_test: int | None = None,
    confidence: float = 0.95,
    glue: bool = True,
    unit: str = "seeds",
    outcomes: Any = None,
) -> Any:
    """Compare paired per-seed values (:func:`dltricks.compare.compare_paired`) and record the outcome.

    Records three glue keys in the current chapter:

    * ``name``: the per-seed differences ``treatment - baseline`` (shown as ``mean ± std``); its JSON entry
      also keeps both arms and the comparison's settings, so a claim test can recompute the verdict;
    * ``name + "_verdict"``: ``"helps"``, ``"no clear difference"`` or ``"hurts"``;
    * ``name + "_text"``: one phrase, e.g. ``"+1.2% ± 0.8% (helps; better in 5 of 5 seeds)"``.

    Args:
        name: the glue key of the differences.
        treatment, baseline, higher_is_better, n_test, confidence, outcomes: as in
            :func:`~dltricks.compare.compare_paired` (``outcomes``, a
            :class:`~dltricks.compare.PairedOutcomes`, is recorded too: a few counts).
        fmt: a ``str.format`` pattern for the differences, e.g. ``"{:+.1%}"``.
        glue: also glue into the notebook (default).
        unit: what the pairs are, for the phrase (``"seeds"``; e.g. ``"data sets"`` for repeated draws).

    Returns:
        The :class:`~dltricks.compare.PairedComparison`.

    Raises:
        RuntimeError: if no chapter is being recorded.
        ValueError, TypeError: as :func:`~dltricks.compare.compare_paired`.
    """
    from dltricks.compare import compare_paired

    if _current is None:
        raise RuntimeError("no chapter is being recorded: call dltricks.book.start_chapter(...) first")
    result = compare_paired(
        treatment, baseline, higher_is_better=higher_is_better, n_test=n_test, confidence=confidence,
        outcomes=outcomes,
    )  # fmt: skip
    _current.record(name, result.diffs, fmt, glue=glue)
    _current.results[name]["comparison"] = {
        "treatment": [float(v) for v in np.asarray(treatment, dtype=float).ravel()],
        "baseline": [float(v) for v in np.asarray(baseline, dtype=float).ravel()],
        "higher_is_better": higher_is_better,
        "n_test": n_test,
        "confidence": confidence,
        "outcomes": None if outcomes is None else outcomes.to_dict(),
        "margin": result.margin,
        "verdict": result.verdict,
    }
    _current.record(f"{name}_verdict", result.verdict, glue=glue)
    _current.record(f"{name}_text", result.describe(fmt, unit), glue=glue)
    return result


def record_tuned_comparison(
    name: str,
    treatment: Any,
    baseline: Any,
    fmt: str = "{:+.3g}",
    *,
    n_test: int | None = None,
    confidence: float = 0.95,
    glue: bool = True,
    outcomes: Any = None,
) -> Any:
    """Compare two arms tuned with the same budget (:func:`dltricks.tuning.compare_tuned`) and record it.

    Records what :func:`record_comparison` records for the two arms' chosen test scores, and, in the JSON
    entry of ``name`` under ``"tuning"``, each arm's configurations and its full validation and test grids,
    so that a claim test can redo the choice on validation and the comparison. Two more glue keys say what
    each arm chose: ``name + "_treatment_choice"`` and ``name + "_baseline_choice"`` (e.g.
    ``"lr=0.003 in 2 of 3 seeds, lr=0.01 in 1"``).

    Args:
        name: the glue key of the differences.
        treatment, baseline: :class:`~dltricks.tuning.TunedArm` s on the same seeds with the same budget.
        fmt, n_test, confidence, glue, outcomes: as in :func:`record_comparison`; ``outcomes`` are those of
            the configurations each arm chose, seed by seed, and are computed (and recorded) from the arms
            when both carry their per-image correctness (:func:`dltricks.tuning.paired_outcomes`).

    Returns:
        The :class:`~dltricks.compare.PairedComparison`.

    Raises:
        RuntimeError: if no chapter is being recorded.
        ValueError, TypeError: as :func:`~dltricks.tuning.compare_tuned`.
    """
    from dltricks.tuning import compare_tuned, paired_outcomes

    if _current is None:
        raise RuntimeError("no chapter is being recorded: call dltricks.book.start_chapter(...) first")
    # refuses an unfair pair first
    compare_tuned(treatment, baseline, n_test=n_test, confidence=confidence, outcomes=outcomes)
    if outcomes is None:
        outcomes = paired_outcomes(treatment, baseline)  # None unless both arms carry their correctness
    result = record_comparison(
        name, treatment.best_test, baseline.best_test, fmt, higher_is_better=treatment.higher_is_better,
        n_test=n_test, confidence=confidence, glue=glue, outcomes=outcomes,
    )  # fmt: skip
    _current.results[name]["tuning"] = {
        role: {
            "name": arm.name,
            "configs": [dict(c) for c in arm.configs],
            "seeds": list(arm.seeds),
            "val": arm.val.tolist(),
            "test": arm.test.tolist(),
            "chosen": [int(i) for i in arm.chosen],
        }
        for role, arm in (("treatment", treatment), ("baseline", baseline))
    }
    _current.record(f"{name}_treatment_choice", treatment.describe_choice(), glue=glue)
    _current.record(f"{name}_baseline_choice", baseline.describe_choice(), glue=glue)
    return result


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a chapter's results JSON (as written by :class:`Chapter`)."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def module_available(name: str, needed_for: str | None = None) -> bool:
    """Whether the optional module ``name`` can be imported here; when not, and ``needed_for`` is given,
    print that what needs it is skipped, so a chapter run without it says why a result is missing.

    Raises:
        TypeError: for a ``name`` or ``needed_for`` that is not a string.
    """
    import importlib.util

    check_type("name", name, str, "a module name")
    check_type("needed_for", needed_for, (str, type(None)), "a string or None")
    try:
        found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module without a spec
        found = False
    if not found and needed_for:
        print(f"Skipped: {needed_for} needs the optional package `{name}`, which is not installed here.")
    return found


def tensorflow_available() -> bool:
    """Whether TensorFlow can be imported here (the Keras cells run only then).

    When it can, TensorFlow is made quiet before anything imports it
    (:func:`dltricks.keras.quiet_tensorflow`): a chapter calls this in its set-up cell, so its Keras cells
    need no settings of their own.
    """
    found = module_available("tensorflow")
    if found:
        from dltricks.keras import quiet_tensorflow

        quiet_tensorflow()
    return found


def _is_number(value: Any) -> bool:
    return isinstance(value, (numbers.Real, np.number)) and not isinstance(value, bool)


def _is_number_sequence(value: Any) -> bool:
    if isinstance(value, (str, bytes, Mapping)):
        return False
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001 - anything that does not convert is simply not a sequence of numbers
        return False
    return arr.ndim >= 1 and arr.size > 0 and np.issubdtype(arr.dtype, np.number)


def _json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (Python or NumPy, at any depth) replaced by ``None``."""
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return str(obj)


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _versions() -> dict[str, str]:
    import torch

    import dltricks

    versions = {"python": platform.python_version(), "dltricks": dltricks.__version__}
    versions |= {"numpy": np.__version__, "torch": torch.__version__}
    # Only report TensorFlow if the chapter imported it: importing it here would cost seconds.
    if "tensorflow" in sys.modules:
        versions["tensorflow"] = sys.modules["tensorflow"].__version__
    if "keras" in sys.modules:
        versions["keras"] = getattr(sys.modules["keras"], "__version__", "unknown")
    return versions
