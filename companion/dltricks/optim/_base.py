"""Machinery shared by the optimizers of :mod:`dltricks.optim`.

Each optimizer module holds only its mathematics: the argument checks of its hyperparameters, the state it
keeps per parameter, and two implementations of one update,

* ``_single_tensor``: a plain loop over the parameters, written to be read next to the paper, one line per
  equation;
* ``_multi_tensor``: the same arithmetic on whole lists of tensors with ``torch._foreach_*`` ops, one
  kernel launch (or one C++ loop on the CPU) per operation instead of one Python-level call per tensor.

This module does the rest, the same way for all of them: ``step(closure)``, skipping parameters without a
gradient, rejecting sparse gradients, creating state lazily, choosing the path (``foreach``), and keeping
the param-group keys and state names of ``torch.optim`` so that ``state_dict()`` moves between the two.

Compatibility with ``torch.optim`` state dicts: ``Optimizer.load_state_dict`` replaces the param groups
wholesale, so every group here carries the keys ``torch.optim`` stores, including those of options not
implemented here (``differentiable``, ``capturable``, ``fused``: ``TORCH_KEYS``) with the values that
mean "the plain algorithm". A group that switches one on (e.g. loaded from a
``torch.optim.Adam(capturable=True)``) is refused at the next ``step()`` rather than silently ignored.
``maximize`` (every optimizer) and ``decoupled_weight_decay`` (Adam and NAdam) are implemented and taken
as arguments, as in torch. A tensor hyperparameter (``lr=torch.tensor(0.01)``), which torch accepts for
its CUDA-graph paths, is refused with that reason (:func:`no_tensor`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch

from dltricks._checks import check_float, check_type, fail

Group = dict[str, Any]
# torch's _foreach ops take lists and return tuples: a path may hold either.
Tensors = list[torch.Tensor] | tuple[torch.Tensor, ...]
States = list[dict[str, Any]]  # empty when the update keeps no state (plain SGD)

# ``torch._foreach_add_(steps, ONE, alpha=1.0)`` increments every step counter in one call; a tensor
# (rather than the number 1) selects the overload that does not wrap the scalar once per tensor.
_ONE = torch.tensor(1.0)


def scalar_dtype() -> torch.dtype:
    """The dtype of ``state["step"]``: float32, or float64 when that is the default dtype (as torch)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def new_step() -> torch.Tensor:
    """A step counter as ``torch.optim`` keeps it: a 0-dim floating tensor on the CPU."""
    return torch.tensor(0.0, dtype=scalar_dtype())


def resolve_foreach(foreach: bool | None, params: list[torch.Tensor]) -> bool:
    """``foreach=None`` means: the multi-tensor path whenever torch has it and every tensor is on CPU/CUDA.

    Unlike ``torch.optim``, which defaults to the per-tensor loop on the CPU, the default here is the
    multi-tensor path on the CPU too: it removes the per-tensor Python overhead there as well.
    """
    if foreach is not None:
        return bool(foreach)
    return hasattr(torch, "_foreach_add_") and all(p.device.type in ("cpu", "cuda") for p in params)


def bump_steps(steps: list[torch.Tensor]) -> None:
    """``t <- t + 1`` for every step counter in one call."""
    torch._foreach_add_(steps, _ONE, alpha=1.0)


def increment_steps(steps: list[torch.Tensor]) -> list[float]:
    """``t <- t + 1`` for every step counter in one call; return the new values as Python floats."""
    torch._foreach_add_(steps, _ONE, alpha=1.0)
    return [s.item() for s in steps]


# -- argument checks -----------------------------------------------------------------------------------


def no_tensor(name: str, value: Any) -> Any:
    """Refuse a tensor hyperparameter, saying why (``torch.optim`` accepts one for its CUDA-graph paths)."""
    if isinstance(value, torch.Tensor):
        fail(
            name,
            "a Python number: torch.optim takes a tensor value for its capturable and fused paths (CUDA "
            "graphs, where a Python number would be baked in), which dltricks.optim does not implement; "
            f"pass float({name})",
            value,
            TypeError,
        )
    return value


def check_lr(lr: Any) -> float:
    return check_float("lr", no_tensor("lr", lr), minimum=0.0)


def check_nonnegative(name: str, value: Any) -> float:
    return check_float(name, no_tensor(name, value), minimum=0.0)


def check_positive(name: str, value: Any) -> float:
    return check_float(name, no_tensor(name, value), minimum=0.0, min_inclusive=False)


def check_unit(name: str, value: Any, *, closed: bool = True) -> float:
    """A value in [0, 1] (``closed``) or [0, 1)."""
    return check_float(name, no_tensor(name, value), minimum=0.0, maximum=1.0, max_inclusive=closed)


def check_betas(betas: Any) -> tuple[float, float]:
    """``betas`` as a pair of floats, each in [0, 1); the message names ``betas[0]`` or ``betas[1]``."""
    if not isinstance(betas, tuple | list) or len(betas) != 2:
        fail("betas", "a pair of real numbers (beta1, beta2)", betas, TypeError)
    return (check_unit("betas[0]", betas[0], closed=False), check_unit("betas[1]", betas[1], closed=False))


def check_bool(name: str, value: Any) -> bool:
    return check_type(name, value, bool, "True or False")


def check_foreach(foreach: Any) -> bool | None:
    if foreach is not None:
        check_type("foreach", foreach, bool, "None, True or False")
    return foreach


# -- the shared optimizer ------------------------------------------------------------------------------


class DLOptimizer(torch.optim.Optimizer):
    """Base class: ``step()``, lazy state, the choice of code path, and state-dict compatibility.

    Subclasses set ``TORCH_KEYS`` (the group keys ``torch.optim`` keeps for options not implemented here,
    with their off values) and implement ``_check_hyper``, ``_init_state``, ``_single_tensor`` and
    ``_multi_tensor``.
    """

    TORCH_KEYS: ClassVar[dict[str, Any]] = {}
    # Keys a state dict saved by an older torch may lack, with the value torch assumes for them.
    SETDEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self._check_all(defaults)
        super().__init__(params, {**defaults, **self.TORCH_KEYS})

    def _check_all(self, hyper: dict[str, Any]) -> None:
        """The subclass's checks, then ``maximize`` (which every optimizer here takes, as in torch)."""
        self._check_hyper(hyper)
        check_bool("maximize", hyper.get("maximize", False))

    # -- hooks for the subclasses ----------------------------------------------------------------------

    @staticmethod
    def _check_hyper(hyper: dict[str, Any]) -> None:
        """Validate the hyperparameters of a group (or of the defaults); raise with the package's message."""
        raise NotImplementedError

    def _needs_state(self, group: dict[str, Any]) -> bool:
        """Whether the update keeps per-parameter state at all (plain SGD does not)."""
        return True

    def _init_state(self, p: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _single_tensor(self, group: Group, params: Tensors, grads: Tensors, states: States) -> None:
        """The update as a readable loop over the parameters."""
        raise NotImplementedError

    def _multi_tensor(self, group: Group, params: Tensors, grads: Tensors, states: States) -> None:
        """The same update with ``torch._foreach_*`` ops over whole lists of tensors."""
        raise NotImplementedError

    # -- torch.optim.Optimizer -------------------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group after checking its hyperparameters and that its parameters are real.

        Raises:
            ValueError, TypeError: for a bad hyperparameter of the group (e.g. ``"lr": -1``).
            TypeError: for a complex parameter. ``torch.optim`` optimizers treat one as two real tensors
                (``view_as_real``); the updates here are written for real tensors only, so every optimizer
                of this package refuses complex parameters when they are added, before any state exists
                (Adagrad creates its state at once), rather than computing something else silently.
        """
        # Check a group's own hyperparameters (e.g. ``[{"params": ..., "lr": -1}]``) before it is added, so
        # that a refused group leaves the optimizer as it was.
        if isinstance(param_group, dict) and hasattr(self, "defaults"):
            self._check_all({**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}})
            params = param_group.get("params")
            if isinstance(params, torch.Tensor):
                params = [params]
            elif params is not None and not isinstance(params, (list, tuple)):
                params = list(params)  # a generator (model.parameters()) can be read once: keep the list
            if params is not None:
                param_group = {**param_group, "params": params}
                for p in params:
                    if isinstance(p, torch.Tensor) and p.is_complex():
                        fail("params", "real tensors (not complex)", p.dtype, TypeError)
        super().add_param_group(param_group)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Called by load_state_dict and unpickling: fill keys an older state dict may lack, as torch does.
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)
            for key, value in {**self.TORCH_KEYS, **self.SETDEFAULTS}.items():
                group.setdefault(key, value)
            for p in group["params"]:
                p_state = self.state.get(p, {})
                for key in ("step", "mu_product"):
                    if key in p_state and not torch.is_tensor(p_state[key]):
                        p_state[key] = torch.tensor(float(p_state[key]), dtype=scalar_dtype())

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one update of every parameter that has a gradient; return ``closure()`` if given.

        The closure re-evaluates the model and returns the loss; it runs with gradients enabled, before
        the update, as in ``torch.optim``.

        Raises:
            RuntimeError: for a sparse gradient.
            ValueError: for a group that switches on a ``torch.optim`` option not implemented here (e.g.
                ``capturable=True``, loaded from a torch state dict).
            TypeError: for a complex parameter (also refused when it is added).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        name = type(self).__name__
        for group in self.param_groups:
            params: list[torch.Tensor] = []
            grads: list[torch.Tensor] = []
            for p in group["params"]:
                if p.grad is None:  # e.g. a frozen or unused parameter: no update and no state
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(
                        f"{name} does not support sparse gradients (e.g. from nn.Embedding(sparse=True)); "
                        "use dense gradients, or torch.optim.SparseAdam for sparse ones"
                    )
                params.append(p)
                grads.append(p.grad)
            if not params:
                continue
            for key, off in self.TORCH_KEYS.items():
                if group.get(key, off):
                    fail(key, f"{off!r} (dltricks.optim.{name} does not implement it)", group[key])
            if group.get("maximize", False):  # torch.optim's maximize: every update starts from -grad
                grads = list(torch._foreach_neg(grads))
            states: States = []
            if self._needs_state(group):
                states = [self.state[p] for p in params]
                for p, s in zip(params, states):
                    if not s:
                        if p.is_complex():
                            fail("params", "real tensors (not complex)", p.dtype, TypeError)
                        self._init_state(p, s, group)
            if resolve_foreach(group["foreach"], params):
                self._multi_tensor(group, params, grads, states)
            else:
                self._single_tensor(group, params, grads, states)
        return loss
