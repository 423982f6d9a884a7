"""Layer-wise (discriminative) learning rates as optimizer parameter groups.

Lower layers of a pretrained network learned general features (edges, strokes, textures) that the new task
needs too; upper layers learned features specific to the old task. Fine-tuning therefore moves the lower
layers less: each layer gets its own learning rate, smallest at the input, largest at the new head
(Howard & Ruder 2018, who divide the rate by 2.6 per layer going down; Yosinski et al. 2014 measure how
specific each layer's features are). In PyTorch a per-layer rate is simply a parameter group:

>>> groups = param_groups(model, {"1": 1e-3, "3": 1e-3}, lr=1e-2)   # reused layers slow, the rest at 1e-2
>>> opt = torch.optim.SGD(groups, lr=1e-2, momentum=0.9)

References:
    Howard, J. and Ruder, S. (2018), "Universal Language Model Fine-tuning for Text Classification", ACL,
    section 3.2 (discriminative fine-tuning).
    Yosinski, J. et al. (2014), "How transferable are features in deep neural networks?", NeurIPS.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from dltricks._checks import check_float, check_type, fail
from dltricks.transfer.freeze import parametrized_children


def discriminative_rates(model: nn.Module, lr: float, *, decay: float = 1 / 2.6) -> dict[str, float]:
    """Per-layer learning rates that shrink by ``decay`` per layer from the head down.

    The last child of ``model`` with parameters (the head) gets ``lr``, the one below ``lr * decay``, the
    next ``lr * decay**2`` and so on: with ``L`` parametrized layers, layer ``l`` (1 = lowest) gets
    :math:`\\eta_l = \\eta\\,\\gamma^{L-l}`.

    Args:
        model: the network; its direct children are the layers.
        lr: the head's learning rate, > 0.
        decay: the factor per layer, in (0, 1]; default ``1/2.6`` (Howard & Ruder 2018).

    Returns:
        ``{child name: learning rate}`` for every parametrized child.

    Raises:
        TypeError: if ``model`` is not a module or a rate is not a number.
        ValueError: if ``lr <= 0``, ``decay`` is outside (0, 1], or ``model`` has no parameters.
    """
    lr = check_float("lr", lr, minimum=0.0, min_inclusive=False)
    decay = check_float("decay", decay, minimum=0.0, maximum=1.0, min_inclusive=False)
    layers = parametrized_children(model)
    if not layers:
        fail("model", "a module with parametrized children", type(model).__name__)
    top = len(layers) - 1
    return {name: lr * decay ** (top - i) for i, (name, _) in enumerate(layers)}


def param_groups(
    model: nn.Module, rates: Mapping[str, float], *, lr: float, trainable_only: bool = True
) -> list[dict[str, Any]]:
    """Parameter groups for ``torch.optim``: one per child of ``model``, each with its own ``lr``.

    Children named in ``rates`` get that rate; every other child (the new head, typically) gets the base
    rate ``lr``. Every parameter of ``model`` is in exactly one group: those registered on ``model``
    itself (a class token, a position embedding) form the group named ``""`` (rate ``rates[""]`` or
    ``lr``), and a tied (shared) weight goes to the first child that holds it, in the order of
    ``model.named_parameters()``. Each group carries its child's ``name`` and the ``param_names`` of its
    parameters (as ``model.named_parameters()`` spells them), so a reader can see where each one went.

    Args:
        model: the network; its direct children are the layers.
        rates: ``{child name: learning rate}``, e.g. from :func:`discriminative_rates`; ``""`` is the
            root's own parameters.
        lr: the base rate for the children not named in ``rates``, > 0.
        trainable_only: leave out parameters with ``requires_grad=False`` (frozen ones), so the optimizer
            holds no state for them; default ``True``.

    Returns:
        A list of ``{"params": [...], "param_names": [...], "lr": float, "name": str}``, the root's group
        first, children without (trainable) parameters left out.

    Raises:
        TypeError: if ``model`` is not a module or ``rates`` not a mapping.
        ValueError: if a name in ``rates`` is not a child of ``model`` (or ``""``) or a rate is not positive.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    check_type("rates", rates, Mapping, "a mapping from child names to learning rates")
    lr = check_float("lr", lr, minimum=0.0, min_inclusive=False)
    children = dict(model.named_children())
    for name, rate in rates.items():
        if name not in children and name != "":
            fail("rates", f"keyed by names of children of `model` ({list(children)}) or ''", name)
        check_float(f"rates[{name!r}]", rate, minimum=0.0, min_inclusive=False)
    groups: dict[str, dict[str, Any]] = {}
    # named_parameters() lists each parameter once (a tied one under its first name), the root's own first.
    for pname, p in model.named_parameters():
        if trainable_only and not p.requires_grad:
            continue
        head, dot, _ = pname.partition(".")
        key = head if dot and head in children else ""
        group = groups.setdefault(key, {"params": [], "param_names": [], "lr": float(rates.get(key, lr)),
                                        "name": key})  # fmt: skip
        group["params"].append(p)
        group["param_names"].append(pname)
    return list(groups.values())
