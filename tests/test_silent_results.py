"""Silent results elsewhere in the package (issue 16, section 4): each now matches the built-in or refuses.

Expected values come from torch (``clip_grad_norm_``, ``nn.BatchNorm1d``, ``swa_utils.update_bn``), from
scikit-learn (``KFold``) or from the JSON standard (RFC 8259 has no NaN or Infinity).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from dltricks.book import Chapter
from dltricks.clip import clip_by_global_norm_
from dltricks.dropout import Dropout
from dltricks.layers import BatchNorm, update_bn
from dltricks.mc_dropout import mc_dropout_predict
from dltricks.optim import OPTIMIZERS, torch_counterpart
from dltricks.selection import cross_validate, kfold_indices

# --- MC dropout without dropout modules ------------------------------------------------------------------


class FunctionalDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(nn.functional.dropout(x, 0.5, self.training))


@pytest.mark.parametrize(
    "model", [nn.Sequential(nn.Linear(3, 2)), FunctionalDropout()], ids=["none", "functional"]
)
def test_mc_dropout_refuses_a_model_without_dropout_modules(model):
    with pytest.raises(ValueError, match=r"`model` must be a module containing dropout modules \(Dropout, "):
        mc_dropout_predict(model, torch.randn(4, 3), passes=3)


@pytest.mark.parametrize("layer", [nn.Dropout(0.5), Dropout(0.5), nn.AlphaDropout(0.5)])
def test_mc_dropout_accepts_every_dropout_module_and_spreads(layer):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), layer, nn.Linear(8, 2))
    pred = mc_dropout_predict(model, torch.randn(4, 3), passes=20, generator_seed=0)
    assert float(pred.std.max()) > 0


# --- complex parameters, every optimizer ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_refuses_complex_parameters_when_they_are_added(name):
    z = nn.Parameter(torch.ones(2, dtype=torch.complex64))
    torch_counterpart(name)([z], lr=0.1)  # torch takes them (as pairs of reals); this package does not
    pattern = r"`params` must be real tensors \(not complex\). Received: params=torch.complex64"
    with pytest.raises(TypeError, match=pattern):
        OPTIMIZERS[name]([z], lr=0.1)
    with pytest.raises(TypeError, match=pattern):
        OPTIMIZERS[name](
            (p for p in [nn.Parameter(torch.ones(2)), z]), lr=0.1
        )  # a generator, as parameters()
    opt = OPTIMIZERS[name]([nn.Parameter(torch.ones(2))], lr=0.1)
    with pytest.raises(TypeError, match=pattern):
        opt.add_param_group({"params": z})
    assert len(opt.param_groups) == 1 and len(opt.param_groups[0]["params"]) == 1


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_generator_of_real_parameters_is_still_read_whole(name):
    model = nn.Linear(3, 2)
    opt = OPTIMIZERS[name](model.parameters(), lr=0.1)
    assert [p.shape for p in opt.param_groups[0]["params"]] == [(2, 3), (2,)]


# --- K-fold seed without shuffle --------------------------------------------------------------------------


def test_kfold_refuses_a_seed_without_shuffle_as_scikit_learn_does():
    from sklearn.model_selection import KFold

    with pytest.raises(ValueError, match="random_state"):
        KFold(3, shuffle=False, random_state=5)
    with pytest.raises(ValueError, match=r"`seed` must be None when shuffle=False .*Received: seed=5"):
        list(kfold_indices(10, 3, shuffle=False, seed=5))
    unshuffled = [v.tolist() for _, v in kfold_indices(10, 3)]
    assert unshuffled == [v.tolist() for _, v in KFold(3).split(np.arange(10))]


def test_cross_validate_shuffles_with_seed_zero_by_default_and_refuses_a_useless_seed():
    folds = []
    cross_validate(lambda tr, va: folds.append(va.tolist()) or 0.0, 10, 3)
    assert folds == [v.tolist() for _, v in kfold_indices(10, 3, shuffle=True, seed=0)]
    with pytest.raises(ValueError, match=r"`seed` must be None when shuffle=False"):
        cross_validate(lambda tr, va: 0.0, 10, 3, shuffle=False, seed=5)


# --- the results JSON -------------------------------------------------------------------------------------


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_the_results_json_holds_null_never_bare_nan_or_infinity(tmp_path):
    chapter = Chapter("nan", profile="quick", device="cpu", seeds=[0], results_dir=tmp_path)
    chapter.record("a", float("nan"), glue=False)
    chapter.record("b", [1.0, float("inf"), np.float32("nan")], glue=False)
    chapter.record("c", np.float64(-math.inf), glue=False)
    data = _strict((tmp_path / "nan.json").read_text())  # bare NaN/Infinity would raise here
    results = data["results"]
    assert results["a"]["value"] is None
    assert results["b"]["values"] == [1.0, None, None] and results["b"]["mean"] is None
    assert results["c"]["value"] is None


# --- BatchNorm running statistics -------------------------------------------------------------------------


def _pair():
    torch.manual_seed(0)
    ours, theirs = BatchNorm(3), nn.BatchNorm1d(3)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def test_reset_running_stats_and_parameters_match_batchnorm1d():
    ours, theirs = _pair()
    x = torch.randn(16, 3) * 4 + 2
    ours(x), theirs(x)
    with torch.no_grad():
        for m in (ours, theirs):
            m.weight.mul_(3)
    ours.reset_running_stats(), theirs.reset_running_stats()
    for k, v in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
    ours.reset_parameters(), theirs.reset_parameters()
    for k, v in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k


def test_update_bn_reaches_our_batchnorm_and_matches_swa_utils_on_torchs():
    torch.manual_seed(1)
    loader = [(torch.randn(8, 4) * 3 + 1, torch.zeros(8)) for _ in range(5)]
    torch.manual_seed(2)
    ours = nn.Sequential(nn.Linear(4, 3), BatchNorm(3))
    theirs = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    theirs.load_state_dict(ours.state_dict())
    torch.optim.swa_utils.update_bn(loader, ours)  # the premise: torch's helper leaves ours untouched
    assert torch.equal(ours[1].running_mean, torch.zeros(3)) and int(ours[1].num_batches_tracked) == 0
    ours.eval()
    update_bn(loader, ours)
    torch.optim.swa_utils.update_bn(loader, theirs)
    for k, v in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[k], v, rtol=1e-6, atol=1e-6)
    assert not ours.training and ours[1].momentum == 0.1


def test_update_bn_refuses_a_model_without_batchnorm():
    with pytest.raises(
        ValueError, match=r"`model` must be a module with a batch-norm layer .*Received: model='Linear'"
    ):
        update_bn([torch.randn(2, 3)], nn.Linear(3, 2))


# --- clip_by_global_norm_ with max_norm=inf ---------------------------------------------------------------


def test_max_norm_inf_measures_without_clipping_as_torch():
    g = torch.tensor([3.0, 4.0, 12.0])
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    a.grad, b.grad = g.clone(), g.clone()
    ours = clip_by_global_norm_([a], float("inf"))
    theirs = torch.nn.utils.clip_grad_norm_([b], float("inf"))
    assert ours.item() == theirs.item() == 13.0
    assert torch.equal(a.grad, g) and torch.equal(b.grad, g)
    for bad in (float("-inf"), float("nan"), 0.0):
        with pytest.raises(ValueError, match=r"`max_norm`"):
            clip_by_global_norm_([a], bad)
