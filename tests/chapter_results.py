"""Reading a chapter's recorded results in the claim tests."""

from __future__ import annotations

import numpy as np

from dltricks.compare import PairedComparison, PairedOutcomes, compare_paired
from dltricks.tuning import compare_tuned, from_scores

# Keys ending in this suffix hold repeated draws of a cheap experiment (e.g. 200 data sets for a polynomial
# fit), not one value per seed; the per-seed length check skips them.
DRAWS_SUFFIX = "_draws"


def values(run: dict, key: str) -> np.ndarray:
    """The per-seed values recorded under ``key`` (a single recorded number becomes a one-element array)."""
    entry = run["results"][key]
    return np.array(entry["values"] if "values" in entry else [entry["value"]], dtype=float)


def check_run_metadata(run: dict) -> None:
    """A claim run is quick (3+ seeds) or full (5+), and every per-seed list has one value per seed."""
    assert run["profile"] in ("quick", "full")
    assert len(run["seeds"]) >= (5 if run["profile"] == "full" else 3)
    for key, entry in run["results"].items():
        if "values" in entry and key not in {"mlp_sizes"} and not key.endswith(DRAWS_SUFFIX):
            assert len(entry["values"]) == len(run["seeds"]), key


def outcomes_of(settings: dict) -> PairedOutcomes | None:
    """The recorded per-image outcomes of a comparison (None for one recorded with ``n_test`` only)."""
    recorded = settings.get("outcomes")
    return None if recorded is None else PairedOutcomes(**recorded)


def assert_paired_outcomes(
    run: dict, key: str, *, n_seeds: int | None = None, n_test: int | None = None
) -> None:
    """Assert that accuracy comparison ``key`` used the paired sampling error of the images both arms saw.

    Its recorded per-image outcomes (counts of the per-image difference, see
    :class:`dltricks.compare.PairedOutcomes`) must exist, cover ``n_seeds`` seeds (default: the run's) and
    sum to ``n_test`` images (default: the comparison's recorded ``n_test``, which must be set): a
    comparison recorded without them falls back on the binomial error of one accuracy.
    """
    settings = run["results"][key]["comparison"]
    outcomes = settings["outcomes"]
    assert outcomes is not None, f"{key}: no per-image outcomes, so its error is the binomial stand-in"
    assert outcomes["n_seeds"] == (len(run["seeds"]) if n_seeds is None else n_seeds), key
    images = settings["n_test"] if n_test is None else n_test
    assert images is not None and sum(outcomes["counts"]) == images, (key, images)


def comparison(run: dict, key: str) -> PairedComparison:
    """Recompute a comparison recorded by ``dltricks.book.record_comparison`` from its two recorded arms.

    Asserts that the verdict and the differences the chapter recorded (and showed in its prose) are the ones
    :func:`dltricks.compare.compare_paired` gives for the recorded per-seed values, and returns the result,
    so a claim test can then check the verdict the prose relies on.
    """
    entry = run["results"][key]
    settings = entry["comparison"]
    result = compare_paired(
        settings["treatment"],
        settings["baseline"],
        higher_is_better=settings["higher_is_better"],
        n_test=settings["n_test"],
        confidence=settings["confidence"],
        outcomes=outcomes_of(settings),
    )
    assert result.verdict == settings["verdict"] == run["results"][f"{key}_verdict"]["value"], key
    np.testing.assert_allclose(entry["values"], result.diffs, rtol=1e-9, atol=1e-12)
    return result


def tuned_comparison(run: dict, key: str) -> PairedComparison:
    """Recompute a comparison recorded by ``dltricks.book.record_tuned_comparison`` from its recorded grids.

    Redoes each arm's choice on validation from the recorded validation and test grids (so a chapter cannot
    report a configuration picked on test), checks that both arms had the same budget and seeds (through
    :func:`dltricks.tuning.compare_tuned`), that the recorded choices and arms are those the grids give,
    and that the recorded verdict is the recomputed one. Returns the comparison, whose verdict the claim
    test then pins.
    """
    entry = run["results"][key]
    arms = {}
    for role in ("treatment", "baseline"):
        grid = entry["tuning"][role]
        arm = from_scores(
            grid["name"], grid["configs"], grid["seeds"], grid["val"], grid["test"],
            higher_is_better=entry["comparison"]["higher_is_better"],
        )  # fmt: skip
        assert [int(i) for i in arm.chosen] == grid["chosen"], (key, role)
        np.testing.assert_allclose(entry["comparison"][role], arm.best_test, rtol=1e-12, atol=0, err_msg=key)
        arms[role] = arm
    settings = entry["comparison"]
    result = compare_tuned(
        arms["treatment"], arms["baseline"], n_test=settings["n_test"], confidence=settings["confidence"],
        outcomes=outcomes_of(settings),
    )  # fmt: skip
    assert result.verdict == comparison(run, key).verdict, key
    return result
