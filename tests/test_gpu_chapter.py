"""The GPU efficiency and data parallelism chapter's claims, checked on the numbers its executed run recorded.

No test asserts a speed-up: timings on a shared CPU are what they are. The tests check that every ratio is
worded by the chapter's rule from its own recorded numbers, that data parallelism computed what one process
computes, and that the cheaper arithmetic kept the accuracy.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from chapter_results import check_run_metadata, comparison, values

pytestmark = pytest.mark.book
SOURCE = (Path(__file__).resolve().parents[1] / "book" / "gpu.md").read_text(encoding="utf-8")
NOISE_FLOOR = 0.05  # the chapter's floor on a ratio's relative noise


@pytest.fixture(scope="module")
def gpu(results):
    return results("gpu")


def ratio_keys(run):
    """Keys recorded by the chapter's record_ratio: a number, its noise and its words."""
    found = run["results"]
    return [k[: -len("_words")] for k in found if k.endswith("_words") and f"{k[:-6]}_noise" in found]


def test_run_metadata(gpu):
    check_run_metadata(gpu)
    assert gpu["results"]["device"]["value"].startswith(("cpu", "cuda"))


def test_every_speed_ratio_is_worded_from_its_own_numbers(gpu):
    keys = ratio_keys(gpu)
    expected = {"timer_first_ratio", "timer_mean_ratio", "feed_dev_vs_dl0", "feed_gen_vs_dl0",
                "feed_dl2_vs_dl0", "aug_dev_vs_cpu", "conv_4_vs_3", "conv_cl_vs_nchw", "amp_speed",
                "cl_speed", "dp_speedup_2", "dp_speedup_4"}  # fmt: skip
    assert expected <= set(keys), expected - set(keys)
    assert sum(k.startswith("size_") for k in keys) == values(gpu, "size_n")[0]
    for key in keys:
        ratio = values(gpu, key)[0]
        noise = values(gpu, f"{key}_noise")[0]
        words = gpu["results"][f"{key}_words"]["value"]
        assert noise >= NOISE_FLOOR - 1e-12, key
        assert ratio > 0 and np.isfinite(ratio), key
        if ratio > 1 + noise:
            assert words.startswith(f"{ratio:.2f}× "), (key, ratio, noise, words)
        elif ratio < 1 / (1 + noise):
            assert words.startswith(f"{1 / ratio:.2f}× "), (key, ratio, noise, words)
        else:
            assert words == "no clear difference", (key, ratio, noise, words)


def test_the_size_summary_counts_the_recorded_words(gpu):
    words = [gpu["results"][f"{k}_words"]["value"] for k in ratio_keys(gpu) if k.startswith("size_")]
    assert values(gpu, "size_n_faster")[0] == sum(w.endswith("faster") for w in words)
    assert values(gpu, "size_n_slower")[0] == sum(w.endswith("slower") for w in words)
    assert values(gpu, "size_n_same")[0] == sum(w == "no clear difference" for w in words)


def test_the_prose_words_ratios_only_through_glue():
    prose = re.sub(r"```\{code-cell\}.*?```", "", SOURCE, flags=re.S)
    for phrase in ("is faster", "was faster", "speeds up training by", "is slower"):
        assert phrase not in prose.lower(), phrase


def test_data_parallel_training_equals_one_process(gpu):
    # float64, the same global batch and batch sequence: only the order of additions differs.
    assert values(gpu, "dp_max_diff")[0] < 1e-10
    assert values(gpu, "dp_max_diff_ddp")[0] < 1e-10
    assert values(gpu, "dp_steps")[0] >= 8
    for world in (2, 4):
        eff = values(gpu, f"dp_eff_{world}")[0]
        speedup = values(gpu, f"dp_speedup_{world}")[0]
        assert eff == pytest.approx(speedup / world, rel=1e-9)


def test_the_communication_model_numbers(gpu):
    # 2 (W-1)/W G at W = 8 for ResNet-50's float32 gradients
    assert values(gpu, "cm_ring_mb_8")[0] == pytest.approx(2 * 7 / 8 * values(gpu, "cm_grad_mb")[0], rel=1e-9)
    eff = [values(gpu, f"cm_eff8_{k}")[0] for k in ("eth", "pcie", "nvlink")]
    assert all(0 < e <= 1 for e in eff)
    assert eff[0] < eff[1] < eff[2]  # faster links, less time communicating


@pytest.mark.keras
def test_mirrored_strategy_step_equals_one_device_step(gpu):
    if gpu["results"]["keras_ran"]["value"] != "ran":
        if importlib.util.find_spec("tensorflow") is not None:
            pytest.fail("TensorFlow is installed but the Keras cell did not run")
        pytest.skip("TensorFlow is not installed: the chapter skipped the check")
    assert values(gpu, "keras_replicas")[0] == 2
    moved = values(gpu, "keras_moved")[0]
    assert values(gpu, "keras_max_diff")[0] < 1e-5 < moved  # float32 rounding, against a real step


def test_mixed_precision_and_compilation_keep_the_accuracy(gpu):
    n_test = values(gpu, "n_test")[0]
    for key in ("amp_acc_diff", "compile_acc_diff", "fp16_acc_diff"):
        if key not in gpu["results"] or "comparison" not in gpu["results"][key]:
            continue
        result = comparison(gpu, key)
        outcomes = gpu["results"][key]["comparison"]["outcomes"]
        # Paired on the same test images: the error of the difference is the paired one (PairedOutcomes).
        assert outcomes is not None and sum(outcomes["counts"]) == n_test, key
        assert result.sampling_error > 0, key
        # Within three paired standard errors of the test set plus the seeds' spread: no real loss.
        tol = 3 * result.sampling_error + 3 * result.std / np.sqrt(result.n)
        assert result.mean > -max(tol, 0.01), (key, result.mean, tol)


def test_tuned_training_keeps_the_accuracy_of_the_naive_one(gpu):
    acc = comparison(gpu, "e2e_acc")  # the verdict shown is the one the recorded values give
    assert gpu["results"]["e2e_acc"]["comparison"]["outcomes"] is not None  # paired on the test images
    comparison(gpu, "e2e_time")
    # The chapter's stated tolerance: 2 points, or the paired 95% interval when the seeds spread wider.
    tol = values(gpu, "e2e_acc_tol")[0]
    assert tol == pytest.approx(max(0.02, acc.margin), rel=1e-9)
    assert acc.verdict != "hurts"
    diff = values(gpu, "e2e_acc_tuned").mean() - values(gpu, "e2e_acc_naive").mean()
    assert abs(diff) <= tol, (diff, tol)
    assert gpu["results"]["e2e_acc_within"]["value"] == "within"
    np.testing.assert_allclose(
        values(gpu, "e2e_speedup"), values(gpu, "e2e_s_naive") / values(gpu, "e2e_s_tuned"), rtol=1e-9
    )


def test_compilation_ran_or_says_why_not(gpu):
    ran = gpu["results"]["compile_ran"]["value"]
    if ran == "ran":
        assert values(gpu, "compile_s")[0] > 0
        assert "compile_speed" in ratio_keys(gpu)
    else:
        assert ran.startswith("skipped"), ran
