"""Reading a chapter's recorded results in the claim tests."""

from __future__ import annotations

import numpy as np


def values(run: dict, key: str) -> np.ndarray:
    """The per-seed values recorded under ``key`` (a single recorded number becomes a one-element array)."""
    entry = run["results"][key]
    return np.array(entry["values"] if "values" in entry else [entry["value"]], dtype=float)


def check_run_metadata(run: dict) -> None:
    """A claim run is quick (3+ seeds) or full (5+), and every per-seed list has one value per seed."""
    assert run["profile"] in ("quick", "full")
    assert len(run["seeds"]) >= (5 if run["profile"] == "full" else 3)
    for key, entry in run["results"].items():
        if "values" in entry and key not in {"mlp_sizes"}:
            assert len(entry["values"]) == len(run["seeds"]), key
