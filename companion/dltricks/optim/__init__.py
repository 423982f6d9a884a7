"""Seven optimizers of ``torch.optim``, re-implemented to be read: SGD (with heavy-ball or Nesterov momentum),
Adagrad, RMSprop, Adadelta, Adam, AdamW and NAdam.

Each class has the constructor, defaults, update, param-group keys and state names of its ``torch.optim``
namesake (so ``state_dict()`` moves between the two), a per-parameter loop commented with the paper's
equations (``foreach=False``), and a multi-tensor path with ``torch._foreach_*`` ops (``foreach=True``, the
default on CPU and CUDA). The tests hold both paths to within 1e-12 of ``torch.optim`` in float64, and each
docstring states where Keras' optimizer of the same name differs.

>>> import torch
>>> from dltricks.optim import OPTIMIZERS, torch_counterpart
>>> w = torch.nn.Parameter(torch.ones(3))
>>> opt = OPTIMIZERS["adam"]([w], lr=0.1)
>>> torch_counterpart("adam") is torch.optim.Adam
True
"""

from __future__ import annotations

import torch

from dltricks._checks import check_choice
from dltricks.optim.adadelta import Adadelta
from dltricks.optim.adagrad import Adagrad
from dltricks.optim.adam import Adam
from dltricks.optim.adamw import AdamW
from dltricks.optim.nadam import NAdam
from dltricks.optim.rmsprop import RMSprop
from dltricks.optim.sgd import SGD
from dltricks.optim.timing import step_time_ratio

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "NAdam",
    "RMSprop",
    "step_time_ratio",
    "torch_counterpart",
]

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": SGD,
    "adagrad": Adagrad,
    "rmsprop": RMSprop,
    "adadelta": Adadelta,
    "adam": Adam,
    "adamw": AdamW,
    "nadam": NAdam,
}


def torch_counterpart(name: str | type) -> type[torch.optim.Optimizer]:
    """The ``torch.optim`` class an optimizer of this package reproduces: ``"adam"`` -> ``torch.optim.Adam``.

    ``name`` is a key of :data:`OPTIMIZERS` (case is ignored) or one of the classes themselves.

    Raises:
        ValueError: for a ``name`` out of its allowed range.
    """
    if isinstance(name, type) and name in OPTIMIZERS.values():
        cls = name
    else:
        key = name.lower() if isinstance(name, str) else name
        cls = OPTIMIZERS[check_choice("name", key, tuple(OPTIMIZERS))]
    # The classes carry their torch namesakes' names (SGD, Adagrad, RMSprop, ...).
    return getattr(torch.optim, cls.__name__)
