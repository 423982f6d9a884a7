"""The Transfer learning chapter's claims, checked on the numbers its run recorded (results/transfer.json).

The chapter words every comparison with :func:`dltricks.compare.compare_paired`; these tests recompute each
verdict from the recorded per-seed values and check that the words in the prose (the glued ``*_verdict``,
``*_text`` and summary strings) match the numbers, whatever the numbers turn out to be.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from chapter_results import comparison, values

from dltricks.compare import compare_paired

pytestmark = pytest.mark.book

PAIRS, ARCHS = ("3rd", "2nd"), ("mlp", "cnn")
REUSE = [f"reuse_{p}_{a}" for p in PAIRS for a in ARCHS]
COMPARISONS = REUSE + [
    "reuse_book_sgd",
    "depth_fe_vs_ft",
    "emb_vs_pix_lr",
    "emb_vs_pix_knn",
    "ae_vs_scratch_small",
    "ae_vs_scratch_mid",
    "a_vs_scratch_small",
    "a_vs_scratch_mid",
    "few_finetune",
    "few_augment",
    "few_pseudo",
]
STRATS = {
    "linear": "linear head on frozen features",
    "top": "fine-tune the top",
    "all": "fine-tune everything",
    "scratch": "from scratch",
}


@pytest.fixture(scope="module")
def tl(results):
    return results("transfer")


def text(run, key):
    return run["results"][key]["value"] if "value" in run["results"][key] else run["results"][key]["text"]


def test_run_metadata(tl):
    assert tl["profile"] in ("quick", "full")
    assert len(tl["seeds"]) >= (5 if tl["profile"] == "full" else 3)
    per_pair = tuple(REUSE) + ("reuse_book_sgd", "depth_")
    for key, entry in tl["results"].items():
        if "values" in entry and not key.startswith(per_pair):
            assert len(entry["values"]) == len(tl["seeds"]), key


def test_frozen_layers_did_not_change_during_the_frozen_phase(tl):
    assert text(tl, "frozen_unchanged") == "yes"
    assert text(tl, "frozen_no_state") == "yes"
    pairs = sum(int(values(tl, f"{k}_n")[0]) for k in REUSE) + int(values(tl, "reuse_3rd_mlp_n")[0])
    assert values(tl, "frozen_runs")[0] >= pairs  # every B on A (and the book-SGD variant) was checked


@pytest.mark.parametrize("key", COMPARISONS)
def test_every_verdict_is_recomputed_from_the_recorded_values(tl, key):
    again = comparison(tl, key)  # the shared check: verdict and differences recomputed with compare_paired
    unit = "pairs (A, B)" if key.startswith(("reuse_", "depth_")) else "seeds"
    assert f"({again.verdict}; better in {again.n_better} of {again.n} {unit})" in text(tl, f"{key}_text")


@pytest.mark.parametrize("key", REUSE)
def test_reuse_is_reported_as_measured(tl, key):
    cmp = tl["results"][key]["comparison"]
    on_a, scratch = np.array(cmp["treatment"]), np.array(cmp["baseline"])
    np.testing.assert_allclose(values(tl, f"{key}_on_a"), on_a)
    np.testing.assert_allclose(values(tl, f"{key}_scratch"), scratch)
    # The share of pairs in which reuse helped, and the count of pairs, match the per-pair values.
    assert values(tl, f"{key}_share")[0] == pytest.approx(np.mean(on_a > scratch))
    assert values(tl, f"{key}_n")[0] == on_a.size >= 2 * values(tl, f"{key}_n_as")[0]
    gain = 0.9385 - 0.9185 if key.startswith("reuse_3rd") else 0.9940 - 0.9705
    assert values(tl, f"{key}_book_or_better")[0] == pytest.approx(np.mean(on_a - scratch >= gain))
    ratio = np.median((1 - on_a) / np.maximum(1 - scratch, 1e-9))
    assert values(tl, f"{key}_err_ratio_median")[0] == pytest.approx(ratio)


def test_the_second_editions_pair_is_easy_from_scratch(tl):
    """The prose says both arms make few errors on shirt vs sandal: over 97% from scratch, 3 std clear."""
    for arch in ARCHS:
        scratch = values(tl, f"reuse_2nd_{arch}_scratch")
        assert scratch.mean() - 3 * scratch.std(ddof=1) > 0.97, scratch


def test_model_a_learned_its_task(tl):
    for key in REUSE:
        assert values(tl, f"{key}_a_acc").min() > 0.75  # 8 classes: chance is 12.5%
    assert values(tl, "src_acc").min() > 0.85  # 5 classes


def test_freeze_depth_best_k_and_curve_are_consistent(tl):
    means = [values(tl, f"depth_k{k}").mean() for k in range(4)]
    assert values(tl, "depth_best_k")[0] == int(np.argmax(means))
    np.testing.assert_allclose(
        tl["results"]["depth_fe_vs_ft"]["comparison"]["treatment"], values(tl, "depth_k3")
    )
    np.testing.assert_allclose(
        tl["results"]["depth_fe_vs_ft"]["comparison"]["baseline"], values(tl, "depth_k0")
    )
    assert len(values(tl, "depth_k0")) == values(tl, "depth_n")[0]


def test_size_similarity_table_winners_and_rule_verdicts_match_the_numbers(tl):
    rule = {
        ("similar", "small"): "linear",
        ("different", "small"): "top",
        ("different", "large"): "scratch",
        ("similar", "large"): "all",
    }
    holds = 0
    for (dom, size), choice in rule.items():
        cells = {k: values(tl, f"cell_{dom}_{size}_{k}") for k in STRATS}
        winner = max(cells, key=lambda k: cells[k].mean())
        assert text(tl, f"cell_{dom}_{size}_winner") == STRATS[winner]
        assert text(tl, f"cell_{dom}_{size}_rule") == STRATS[choice]
        n_test = int(values(tl, "n_tgt_test" if dom == "similar" else "n_dig_test")[0])
        if winner == choice:
            expected = "the rule's choice won"
        else:
            c = compare_paired(cells[choice], cells[winner], n_test=n_test)
            expected = (
                "the rule's choice was clearly worse"
                if c.verdict == "hurts"
                else "the rule's choice was within the noise of the winner"
            )
        assert text(tl, f"cell_{dom}_{size}_rule_verdict") == expected
        holds += expected != "the rule's choice was clearly worse"
    assert values(tl, "rule_holds")[0] == holds


def test_every_cell_beats_chance(tl):
    for dom, chance in (("similar", 0.2), ("different", 0.1)):
        for size in ("small", "large"):
            for k in STRATS:
                assert values(tl, f"cell_{dom}_{size}_{k}").mean() > 2 * chance


def test_a_linear_head_is_the_embedding_probe_of_the_table(tl):
    np.testing.assert_allclose(values(tl, "emb_lr_emb"), values(tl, "cell_similar_small_linear"))


def test_pretraining_with_100_labels_is_worded_as_measured(tl):
    """A pretraining method beats scratch with 100 labels and the chapter names it, or it says neither."""
    helped = [
        name
        for name, key in (
            ("pretraining on task A", "a_vs_scratch_small"),
            ("the autoencoder", "ae_vs_scratch_small"),
        )
        if tl["results"][key]["comparison"]["verdict"] == "helps"
    ]
    statement = text(tl, "pretrain_small_statement")
    if helped:
        assert statement == " and ".join(helped) + " beat training from scratch with 100 labels"
    else:
        assert statement == "neither pretraining method clearly beat training from scratch with 100 labels"
    assert values(tl, "ae_size_small")[0] == 100 and values(tl, "ae_size_mid")[0] == 500


def test_the_few_sample_baseline_is_the_tables_scratch_cell(tl):
    np.testing.assert_allclose(values(tl, "few_base"), values(tl, "cell_similar_small_scratch"))
    np.testing.assert_allclose(values(tl, "ae_scratch_small"), values(tl, "cell_similar_small_scratch"))
    np.testing.assert_allclose(values(tl, "ae_a_small"), values(tl, "cell_similar_small_all"))
    # Confident pseudo-labels are mostly right (else the method would be training on noise).
    assert values(tl, "few_pseudo_acc").mean() > 0.8


@pytest.mark.keras
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed")
def test_keras_cells_ran(tl):
    assert text(tl, "keras_ran") == "ran"
    assert 0.5 < values(tl, "keras_b_acc")[0] <= 1.0
