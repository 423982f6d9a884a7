"""Helpers that switch train/eval mode give every submodule its own mode back (issue 25).

``was = model.training; ...; model.train(was)`` sets one flag on every submodule: a frozen or eval-mode
layer inside a train-mode model comes back in training mode. Each helper here must restore the mixed state.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dltricks.batches import TensorBatches
from dltricks.diagnostics.lr_range import lr_range_test
from dltricks.diagnostics.overfit import overfit_one_batch
from dltricks.distill import teacher_logits
from dltricks.layers import update_bn
from dltricks.train import evaluate
from dltricks.transfer import FeatureExtractor, embed


def mixed() -> nn.Sequential:
    """A train-mode network with one batch norm in eval mode (frozen statistics, by hand)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 3))
    model.train()
    model[1].eval()
    return model


def modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)


CALLS = {
    "evaluate": lambda m, x, y: evaluate(m, TensorBatches(x, y, 16)),
    "update_bn": lambda m, x, y: update_bn([x], m),
    "overfit_one_batch": lambda m, x, y: overfit_one_batch(m, x, y, max_steps=2),
    "lr_range_test": lambda m, x, y: lr_range_test(
        m, torch.optim.SGD(m.parameters(), lr=0.1), TensorBatches(x, y, 16), num_steps=2, progress=False
    ),
    "lr_range_test(restore=False)": lambda m, x, y: lr_range_test(
        m,
        torch.optim.SGD(m.parameters(), lr=0.1),
        TensorBatches(x, y, 16),
        num_steps=2,
        progress=False,
        restore=False,
    ),
    "teacher_logits": lambda m, x, y: teacher_logits(m, x),
    "embed": lambda m, x, y: embed(FeatureExtractor(m, "2"), x),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_each_helper_restores_every_submodules_mode(name):
    model = mixed()
    before = modes(model)
    assert before == [True, True, False, True, True, True]
    x, y = batch()
    CALLS[name](model, x, y)
    assert modes(model) == before


@pytest.mark.parametrize("name", list(CALLS))
def test_an_eval_mode_model_stays_in_eval_mode(name):
    model = mixed().eval()
    x, y = batch()
    CALLS[name](model, x, y)
    assert not any(modes(model))


def test_unfreezes_optimizer_watch_goes_with_its_model():
    """Issue 25: unfreeze() without an optimizer registers a global optimizer step pre-hook; a model dropped
    before any of its optimizers stepped must not leave it behind (the hook leaked for the whole process)."""
    import gc

    import torch.optim.optimizer as torch_optimizer

    from dltricks.transfer.freeze import freeze, unfreeze

    hooks = torch_optimizer._global_optimizer_pre_hooks
    before = len(hooks)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    freeze(model, depth=2)
    unfreeze(model, depth=1)
    assert len(hooks) == before + 1  # watching for an optimizer that misses the unfrozen layer
    del model
    gc.collect()
    assert len(hooks) == before
    # A model whose optimizer does step still has its hook removed at once, as before.
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    freeze(model, depth=1)
    unfreeze(model, depth=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    assert len(hooks) == before
