"""Recording results: formatting, the results JSON, and the glue it puts into the notebook."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dltricks import book


def test_mean_std_uses_the_sample_standard_deviation():
    assert book.mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert book.mean_std([4.0]) == (4.0, 0.0)


def test_format_value():
    assert book.format_value(0.12345) == "0.123"
    assert book.format_value(0.5, "{:.1%}") == "50.0%"
    assert book.format_value([0.8, 0.9], "{:.1%}") == "85.0% ± 7.1%"
    assert book.format_value([-1.0, -3.0], "{:+.1f}") == "-2.0 ± 1.4"
    assert book.format_value(np.array([1, 3]), "{:.0f}") == "2 ± 1"
    assert book.format_value("ran") == "ran"


def test_pick_falls_back_from_smoke_to_quick():
    assert book.pick("smoke", quick=3, full=5) == 3
    assert book.pick("full", quick=3, full=5) == 5


def test_chapter_writes_metadata_and_results(tmp_path, capsys):
    ch = book.Chapter("demo", profile="quick", device="cpu", seeds=[0, 1], results_dir=tmp_path)
    assert ch.record("acc", [0.8, 0.9], "{:.1%}") is None  # a recording cell prints nothing
    ch.record("n", 250, "{:d}")
    ch.record("note", "ran", glue=False)
    data = json.loads((tmp_path / "demo.json").read_text())
    assert data["chapter"] == "demo" and data["profile"] == "quick" and data["seeds"] == [0, 1]
    assert data["device"] == "cpu" and data["commit"] and data["started"]
    assert {"python", "torch", "numpy", "dltricks"} <= set(data["versions"])
    assert data["results"]["acc"] == {
        "text": "85.0% ± 7.1%",
        "values": [0.8, 0.9],
        "mean": pytest.approx(0.85),
        "std": pytest.approx(0.0707106781),
    }
    assert data["results"]["n"] == {"text": "250", "value": 250}
    assert data["results"]["note"]["value"] == "ran"
    assert not list(tmp_path.glob("*.tmp")), "temporary files must not be left behind"


def test_record_glues_the_text_for_myst_nb(tmp_path, monkeypatch):
    glued = {}
    import myst_nb

    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display: glued.update({name: (value, display)}))
    book.start_chapter("demo", profile="quick", device="cpu", seeds=[0], results_dir=tmp_path)
    book.record("gap", [0.1, 0.3], "{:.2f}")
    assert glued == {"gap": ("0.20 ± 0.14", False)}


def test_record_without_a_chapter_says_what_to_do(monkeypatch):
    monkeypatch.setattr(book, "_current", None)
    with pytest.raises(RuntimeError, match="start_chapter"):
        book.record("x", 1)


def test_default_results_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(book.RESULTS_ENV, str(tmp_path / "r"))
    assert book.default_results_dir() == tmp_path / "r"
    monkeypatch.delenv(book.RESULTS_ENV)
    (tmp_path / "_toc.yml").write_text("root: x\n")
    (tmp_path / "book").mkdir()
    monkeypatch.chdir(tmp_path / "book")
    # Outside the build (JupyterLab): never the folder `make book` renders the book from.
    assert book.default_results_dir() == tmp_path / "_build" / "interactive" / "results"
    assert book.default_results_dir() != tmp_path / "_build" / "results"


def test_tensorflow_is_quiet_before_a_chapter_imports_it(monkeypatch):
    """The one place the log level is set: a chapter's set-up call, before any Keras cell imports TensorFlow;
    a value the user set is kept."""
    from dltricks.keras import QUIET_TENSORFLOW_ENV, quiet_tensorflow

    for key in QUIET_TENSORFLOW_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(book, "module_available", lambda name, needed_for=None: name == "tensorflow")
    assert book.tensorflow_available()
    assert {k: os.environ[k] for k in QUIET_TENSORFLOW_ENV} == {
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERAS_BACKEND": "tensorflow",
        "TF_ENABLE_ONEDNN_OPTS": "0",
    }
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    assert quiet_tensorflow()["TF_CPP_MIN_LOG_LEVEL"] == "0"
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    monkeypatch.setattr(book, "module_available", lambda name, needed_for=None: False)
    assert not book.tensorflow_available()
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ  # without TensorFlow nothing is set
