"""dltricks.optim against torch.optim: the same trajectories in float64 on both code paths, state dicts that
move between the two, argument checks, convergence on an ill-conditioned quadratic and on Rosenbrock, and the
timing helper. Keras comparisons live in ``test_optim_keras.py``."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dltricks.optim as optim
from dltricks.optim import OPTIMIZERS, SGD, Adagrad, Adam, AdamW, step_time_ratio, torch_counterpart
from dltricks.optim._base import resolve_foreach

# Both implementations do the same float64 operations in the same order, so in practice they agree to the
# last bit (measured: 0.0 for every row, and at most 4.4e-16 between NAdam's two code paths, which take the
# square root before or after the bias correction). 1e-12 leaves room for a different torch build (BLAS,
# vectorisation) reordering a reduction, while any real difference of formula shows up far above it.
PARITY_ATOL = 1e-12
PARITY_STEPS = 50
F64 = torch.float64

# One row per optimizer and option set: (name, hyperparameters).
CASES = [
    pytest.param("sgd", {"lr": 0.05}, id="sgd-plain"),
    pytest.param("sgd", {"lr": 0.05, "momentum": 0.9}, id="sgd-momentum"),
    pytest.param("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True}, id="sgd-nesterov"),
    pytest.param("sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}, id="sgd-weight-decay"),
    pytest.param("sgd", {"lr": 0.05, "momentum": 0.8, "dampening": 0.3}, id="sgd-dampening"),
    # Hyperparameters at their edges: 1.0 is where a `!= 0` test mistyped as `!= 1` would switch a term off.
    pytest.param("sgd", {"lr": 0.01, "weight_decay": 1.0}, id="sgd-weight-decay-one"),
    pytest.param("sgd", {"lr": 0.002, "momentum": 1.0}, id="sgd-momentum-one"),
    pytest.param("sgd", {"lr": 0.05, "momentum": 0.5, "dampening": 1.0}, id="sgd-dampening-one"),
    pytest.param("adagrad", {"lr": 0.1}, id="adagrad-plain"),
    pytest.param(
        "adagrad",
        {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1, "weight_decay": 0.01},
        id="adagrad-decay-accumulator",
    ),
    pytest.param("rmsprop", {"lr": 0.01}, id="rmsprop-plain"),
    pytest.param("rmsprop", {"lr": 0.01, "centered": True}, id="rmsprop-centered"),
    pytest.param("rmsprop", {"lr": 0.01, "momentum": 0.5, "weight_decay": 0.01}, id="rmsprop-momentum"),
    pytest.param("rmsprop", {"lr": 0.01, "momentum": 0.5, "centered": True, "alpha": 0.9}, id="rmsprop-all"),
    pytest.param("adadelta", {"lr": 1.0}, id="adadelta-plain"),
    pytest.param(
        "adadelta", {"lr": 0.5, "rho": 0.95, "eps": 1e-5, "weight_decay": 0.01}, id="adadelta-options"
    ),
    pytest.param("adam", {"lr": 0.01}, id="adam-plain"),
    pytest.param("adam", {"lr": 0.01, "amsgrad": True}, id="adam-amsgrad"),
    pytest.param("adam", {"lr": 0.01, "weight_decay": 0.01, "betas": (0.8, 0.99)}, id="adam-weight-decay"),
    pytest.param("adam", {"lr": 0.01, "weight_decay": 1.0}, id="adam-weight-decay-one"),
    pytest.param("adam", {"lr": 0.01, "betas": (0.0, 0.0), "eps": 1e-3}, id="adam-betas-zero"),
    pytest.param("adamw", {"lr": 0.01}, id="adamw-default-decay"),
    pytest.param("adamw", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}, id="adamw-amsgrad"),
    pytest.param("nadam", {"lr": 0.01}, id="nadam-plain"),
    pytest.param("nadam", {"lr": 0.01, "weight_decay": 0.01, "momentum_decay": 0.01}, id="nadam-options"),
    # torch.optim's flags, each accepted with torch's result (before: maximize was a TypeError at __init__,
    # decoupled_weight_decay too).
    pytest.param(
        "adam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}, id="adam-decoupled"
    ),
    pytest.param(
        "nadam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}, id="nadam-decoupled"
    ),  # fmt: skip
    *[
        pytest.param(name, {**hyper, "maximize": True}, id=f"{name}-maximize")  # small rates: uphill diverges
        for name, hyper in [
            ("sgd", {"lr": 5e-5, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
            ("adagrad", {"lr": 0.01, "weight_decay": 0.01}),
            ("rmsprop", {"lr": 0.001, "momentum": 0.5, "centered": True}),
            ("adadelta", {"lr": 1.0, "weight_decay": 0.01}),
            ("adam", {"lr": 0.005, "amsgrad": True, "weight_decay": 0.01}),
            ("adamw", {"lr": 0.005}),
            ("nadam", {"lr": 0.005, "weight_decay": 0.01}),
        ]
    ],
]


# -- a small random problem: an MLP with parameters of several shapes, in two param groups -------------------


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(32, 5, generator=g, dtype=F64), torch.randn(32, 3, generator=g, dtype=F64)


X, Y = _data()


def _params(seed=1):
    """Weights and biases of a 5-8-3 MLP, a 0-dim scale, and a parameter the loss does not use (grad None)."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(8, 5), (8,), (3, 8), (3,), (), (4,)]
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=F64)) for s in shapes]


def _loss(ps):
    w1, b1, w2, b2, scale, _unused = ps
    return ((torch.tanh(X @ w1.T + b1) @ w2.T + b2) * scale.exp() - Y).pow(2).mean()


def _optimizer(cls, ps, hyper, **kw):
    # Two groups: the first layer at half the learning rate, to check that per-group values are used.
    first = {"params": ps[:2], "lr": hyper["lr"] / 2}
    return cls([first, {"params": ps[2:]}], **hyper, **kw)


def _train(opt, ps, steps, start=0):
    for i in range(start, start + steps):
        if i == 15:  # a schedule's change of learning rate mid-run: both must read the groups every step
            for group in opt.param_groups:
                group["lr"] *= 0.5
        opt.zero_grad()
        _loss(ps).backward()
        opt.step()


def _max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


# -- parity with torch.optim ---------------------------------------------------------------------------------


@functools.cache
def _trajectory(name, hyper_items, impl, foreach):
    """(parameters, optimizer) after PARITY_STEPS steps; cached, as two tests compare the same runs."""
    cls = OPTIMIZERS[name] if impl == "ours" else torch_counterpart(name)
    ps = _params()
    opt = _optimizer(cls, ps, dict(hyper_items), foreach=foreach)
    _train(opt, ps, PARITY_STEPS)
    return ps, opt


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize(("name", "hyper"), CASES)
def test_same_trajectory_as_torch_optim(name, hyper, foreach):
    """50 steps of ours and of torch.optim (same ``foreach``) in float64 agree within PARITY_ATOL = 1e-12,
    with the same state names, step dtype and param-group keys."""
    ours_ps, ours = _trajectory(name, tuple(hyper.items()), "ours", foreach)
    theirs_ps, theirs = _trajectory(name, tuple(hyper.items()), "torch", foreach)
    assert _max_diff(ours_ps, theirs_ps) <= PARITY_ATOL
    assert _max_diff(ours_ps, _params()) > 1e-3  # the parameters moved: the comparison is not vacuous
    assert ours_ps[-1].grad is None and torch.equal(ours_ps[-1], _params()[-1])  # no gradient, no update
    for p, q in zip(ours_ps, theirs_ps):
        assert set(ours.state.get(p, {})) == set(theirs.state.get(q, {}))
        for key, value in ours.state.get(p, {}).items():
            other = theirs.state[q][key]
            assert value.dtype == other.dtype and value.shape == other.shape, key
            assert (value - other).abs().max().item() <= PARITY_ATOL, key
    assert [set(g) for g in ours.param_groups] == [set(g) for g in theirs.param_groups]


@pytest.mark.parametrize(("name", "hyper"), CASES)
def test_loop_and_foreach_paths_agree(name, hyper):
    """The readable loop and the multi-tensor path of each optimizer agree within PARITY_ATOL (float64)."""
    loop_ps, _ = _trajectory(name, tuple(hyper.items()), "ours", False)
    fast_ps, _ = _trajectory(name, tuple(hyper.items()), "ours", True)
    assert _max_diff(loop_ps, fast_ps) <= PARITY_ATOL


@pytest.mark.parametrize(("name", "hyper"), CASES)
def test_state_dict_moves_between_torch_optim_and_ours(name, hyper):
    """Train 10 steps with one implementation, load its ``state_dict()`` into the other, continue 15 steps:
    the trajectory is the one the first implementation gives when reloaded from the same dict (<= 1e-12).

    The reference is a reload rather than the uninterrupted run because ``Optimizer.load_state_dict`` casts
    floating state to the parameters' dtype, which turns NAdam's float32 ``mu_product`` into float64 (in
    torch.optim as here); for every other optimizer the reload changes nothing.
    """
    ours_cls, torch_cls = OPTIMIZERS[name], torch_counterpart(name)
    for source_cls, target_cls in ((torch_cls, ours_cls), (ours_cls, torch_cls)):
        ps = _params()
        source = _optimizer(source_cls, ps, hyper)
        _train(source, ps, 10)
        saved = source.state_dict()
        runs = []
        for cls in (source_cls, target_cls):
            q = [torch.nn.Parameter(p.detach().clone()) for p in ps]
            opt = _optimizer(cls, q, hyper)
            # A copy each time: load_state_dict keeps the saved tensors themselves when no cast is needed,
            # and two optimizers sharing one momentum buffer would corrupt both runs.
            opt.load_state_dict(copy.deepcopy(saved))
            _train(opt, q, 15, start=10)
            runs.append(q)
        assert _max_diff(*runs) <= PARITY_ATOL, (source_cls, target_cls)
        assert _max_diff(runs[0], ps) > 1e-4  # the continuation moved the parameters


@settings(max_examples=30, deadline=None, database=None)
@given(
    name=st.sampled_from(sorted(OPTIMIZERS)),
    lr=st.floats(1e-4, 0.5),
    beta=st.floats(0.0, 0.999),
    weight_decay=st.sampled_from([0.0, 1e-3, 0.1]),
    flag=st.booleans(),
    shapes=st.lists(st.lists(st.integers(1, 4), max_size=3).map(tuple), min_size=1, max_size=4),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_hyperparameters_and_shapes_match_torch(name, lr, beta, weight_decay, flag, shapes, seed):
    """Property: for random hyperparameters and tensor shapes, 5 steps on random gradients give the same
    parameters as torch.optim (both paths, float64, within PARITY_ATOL)."""
    hyper = {"lr": lr, "weight_decay": weight_decay}
    if name == "sgd":
        hyper.update(momentum=beta, nesterov=flag and beta > 0)
    elif name == "adagrad":
        hyper.update(lr_decay=beta, initial_accumulator_value=float(flag))
    elif name == "rmsprop":
        # alpha = 0 with centered=True makes v_t - gbar_t^2 = g^2 - g^2 = 0 up to rounding: the denominator
        # is then eps plus the square root of a rounding error, and an FMA in one path but not the other
        # changes the step by tens of percent. A real but degenerate setting, kept out of the property.
        hyper.update(alpha=0.5 + beta / 2, centered=flag, momentum=beta / 2)
    elif name == "adadelta":
        hyper.update(rho=beta)
    elif name in ("adam", "adamw"):
        hyper.update(betas=(beta, 0.999), amsgrad=flag)
    else:
        hyper.update(betas=(beta, 0.99), momentum_decay=beta / 100)
    g = torch.Generator().manual_seed(seed)
    start = [torch.randn(s, generator=g, dtype=F64) for s in shapes]
    grads = [[torch.randn(s, generator=g, dtype=F64) for s in shapes] for _ in range(5)]
    results = []
    for cls, foreach in (
        (torch_counterpart(name), False),
        (OPTIMIZERS[name], False),
        (OPTIMIZERS[name], True),
    ):
        ps = [torch.nn.Parameter(t.clone()) for t in start]
        opt = cls(ps, foreach=foreach, **hyper)
        for step_grads in grads:
            for p, gr in zip(ps, step_grads):
                p.grad = gr.clone()
            opt.step()
        results.append(ps)
    assert _max_diff(results[0], results[1]) <= PARITY_ATOL
    assert _max_diff(results[0], results[2]) <= PARITY_ATOL


# -- behavior of step() -------------------------------------------------------------------------------------


def test_step_calls_the_closure_with_gradients_enabled_and_returns_its_loss():
    ps = _params()
    opt = Adam(ps, lr=0.01)
    calls = []

    def closure():
        calls.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = _loss(ps)
        loss.backward()
        return loss

    with torch.no_grad():  # the closure must still be able to backpropagate
        loss = opt.step(closure)
    assert calls == [True]
    assert loss.item() == pytest.approx(_loss(_params()).item())
    assert opt.step() is None


def test_zero_grad_is_inherited_and_parameters_without_gradients_get_no_state():
    ps = _params()
    opt = Adam(ps, lr=0.01)
    _loss(ps).backward()
    opt.step()
    assert ps[-1] not in opt.state  # the unused parameter: no gradient, no state
    opt.zero_grad()
    assert all(p.grad is None for p in ps)
    opt.step()  # nothing has a gradient: a no-op
    assert int(opt.state[ps[0]]["step"]) == 1


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_sparse_gradients_are_rejected(name):
    emb = torch.nn.Embedding(10, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    opt = OPTIMIZERS[name](emb.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match=r"does not support sparse gradients"):
        opt.step()


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
def test_gradients_are_not_modified(foreach):
    """Unlike torch.optim's foreach SGD with Nesterov, which adds the momentum into ``p.grad`` in place."""
    for cls, hyper in ((SGD, {"momentum": 0.9, "nesterov": True}), (Adam, {}), (optim.NAdam, {})):
        p = torch.nn.Parameter(torch.ones(3, dtype=F64))
        opt = cls([p], lr=0.1, foreach=foreach, **hyper)
        for _ in range(3):
            p.grad = torch.full((3,), 0.5, dtype=F64)
            opt.step()
            assert torch.equal(p.grad, torch.full((3,), 0.5, dtype=F64)), cls


def test_foreach_none_takes_the_multi_tensor_path_on_cpu(monkeypatch):
    assert resolve_foreach(None, [torch.zeros(2)]) is True
    assert resolve_foreach(None, [torch.zeros(2, device="meta")]) is False
    assert resolve_foreach(False, [torch.zeros(2)]) is False
    used = []
    monkeypatch.setattr(Adam, "_multi_tensor", lambda self, *a: used.append("foreach"))
    monkeypatch.setattr(Adam, "_single_tensor", lambda self, *a: used.append("loop"))
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.ones(2)
    Adam([p]).step()
    Adam([p], foreach=False).step()
    assert used == ["foreach", "loop"]


def test_state_is_created_lazily_with_torch_names_and_a_float32_step():
    p = torch.nn.Parameter(torch.ones(3, dtype=F64))
    p.grad = torch.ones(3, dtype=F64)
    expected = {
        "sgd": ({"momentum": 0.9}, {"momentum_buffer"}),
        "adagrad": ({}, {"step", "sum"}),
        "rmsprop": (
            {"momentum": 0.5, "centered": True},
            {"step", "square_avg", "momentum_buffer", "grad_avg"},
        ),
        "adadelta": ({}, {"step", "square_avg", "acc_delta"}),
        "adam": ({"amsgrad": True}, {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}),
        "adamw": ({}, {"step", "exp_avg", "exp_avg_sq"}),
        "nadam": ({}, {"step", "mu_product", "exp_avg", "exp_avg_sq"}),
    }
    for name, (hyper, keys) in expected.items():
        opt = OPTIMIZERS[name]([p], **hyper)
        opt.step()
        assert set(opt.state[p]) == keys, name
        for key in ("step", "mu_product"):
            if key in keys:
                assert opt.state[p][key].dtype == torch.float32 and opt.state[p][key].ndim == 0
    assert not SGD([p], lr=0.1).state  # plain SGD keeps nothing
    assert int(Adagrad([p]).state[p]["step"]) == 0  # Adagrad, as torch, creates its state at construction


def test_adagrad_effective_step_decreases_monotonically():
    """The per-coordinate step lr / (sqrt(sum) + eps) only shrinks, whatever the gradients."""
    g = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.zeros(50, dtype=F64))
    opt = Adagrad([p], lr=0.1, eps=1e-10)
    previous = torch.full((50,), math.inf, dtype=F64)
    for t in range(30):
        grad = torch.randn(50, generator=g, dtype=F64) * (t % 3)  # zero gradients every third step
        p.grad = grad
        opt.step()
        effective = 0.1 / (opt.state[p]["sum"].sqrt() + 1e-10)
        assert bool((effective <= previous).all())
        assert bool((effective[grad != 0] < previous[grad != 0]).all())
        previous = effective


def test_unsupported_torch_options_in_a_loaded_state_dict_are_refused():
    p = torch.nn.Parameter(torch.ones(2))
    theirs = torch.optim.Adam([p], lr=0.1, differentiable=True)
    ours = Adam([p], lr=0.1)
    ours.load_state_dict(theirs.state_dict())
    p.grad = torch.ones(2)
    with pytest.raises(ValueError, match=r"`differentiable` must be False .*Received: differentiable=True"):
        ours.step()


def test_a_loaded_maximize_flag_is_honoured():
    # Before: refused at step(); now implemented, the loaded flag gives torch's update.
    p, q = torch.nn.Parameter(torch.ones(2, dtype=F64)), torch.nn.Parameter(torch.ones(2, dtype=F64))
    theirs = torch.optim.Adam([p], lr=0.1, maximize=True)
    ours = Adam([q], lr=0.1)
    ours.load_state_dict(theirs.state_dict())
    for _ in range(3):
        p.grad, q.grad = p.detach() * 2, q.detach() * 2
        theirs.step()
        ours.step()
    assert torch.equal(p, q) and bool((p > 1).all())  # uphill


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_tensor_hyperparameter_is_refused_saying_why(name):
    # torch.optim accepts lr=torch.tensor(...) (for its capturable/fused paths); ours said only "a real
    # number. Received: lr=tensor(0.0100)", as if the value were wrong.
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(TypeError, match=r"`lr` must be a Python number: torch.optim takes a tensor value for "
                                        r"its capturable and fused paths .* pass float\(lr\)"):  # fmt: skip
        OPTIMIZERS[name]([p], lr=torch.tensor(0.01))
    torch_counterpart(name)([p], lr=torch.tensor(0.01))  # what torch accepts


def test_adam_betas_as_tensors_are_refused_saying_why():
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(TypeError, match=r"`betas\[0\]` must be a Python number: torch.optim takes a tensor"):
        Adam([p], betas=(torch.tensor(0.9), 0.999))


def test_adamw_stays_decoupled_when_loading_an_adam_state_dict():
    p = torch.nn.Parameter(torch.ones(2))
    opt = AdamW([p], weight_decay=0.1)
    opt.load_state_dict(Adam([p], weight_decay=0.1).state_dict())
    assert opt.param_groups[0]["decoupled_weight_decay"] is True
    assert torch.optim.AdamW([p]).state_dict()["param_groups"][0].keys() == opt.param_groups[0].keys() | {
        "params"
    }


def test_registry_and_torch_counterparts():
    assert list(OPTIMIZERS) == ["sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "nadam"]
    for name, cls in OPTIMIZERS.items():
        assert torch_counterpart(name) is getattr(torch.optim, cls.__name__)
        assert torch_counterpart(cls) is torch_counterpart(name.upper())
        assert issubclass(cls, torch.optim.Optimizer)
        assert cls.__module__.startswith("dltricks.optim.")
        assert "Keras differences" in cls.__doc__
    assert set(optim.__all__) >= {cls.__name__ for cls in OPTIMIZERS.values()}


# -- the defaults are torch's --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_defaults_are_torch_defaults(name):
    p = torch.nn.Parameter(torch.ones(2))
    ours, theirs = OPTIMIZERS[name]([p]).defaults, torch_counterpart(name)([p]).defaults
    assert ours == theirs


# -- convergence ---------------------------------------------------------------------------------------------

KAPPA = 50.0


def _quadratic_grad(w):
    """f(x, y) = (x^2 + KAPPA y^2) / 2: condition number 50, minimum at the origin."""
    return [w[0], KAPPA * w[1]]


def _rosenbrock_grad(w):
    """f(x, y) = (1 - x)^2 + 100 (y - x^2)^2: a curved, flat-bottomed valley, minimum at (1, 1)."""
    x, y = w
    return [-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)]


def _descend(name, hyper, grad, start, steps, every=None):
    """The final point, or with ``every`` the points after every ``every`` steps."""
    w = torch.nn.Parameter(torch.tensor(start, dtype=F64))
    opt = OPTIMIZERS[name]([w], **hyper)
    points = []
    for t in range(1, steps + 1):
        w.grad = torch.tensor(grad(w.tolist()), dtype=F64)  # the exact gradient, cheaper than autograd here
        opt.step()
        if every and t % every == 0:
            points.append(w.tolist())
    return points if every else w.tolist()


@pytest.mark.parametrize(
    ("name", "hyper", "steps"),
    [
        ("sgd", {"lr": 0.02, "momentum": 0.9}, 200),
        ("adagrad", {"lr": 0.5}, 200),
        ("rmsprop", {"lr": 0.01}, 200),
        ("adadelta", {"lr": 1.0, "rho": 0.99}, 600),
        ("adam", {"lr": 0.05}, 300),
        ("adamw", {"lr": 0.05, "weight_decay": 0.01}, 300),
        ("nadam", {"lr": 0.05}, 200),
    ],
)
def test_converges_on_an_ill_conditioned_quadratic(name, hyper, steps):
    """From (1, 1), within 1e-3 of the minimum (Euclidean distance) after the stated number of steps."""
    x, y = _descend(name, hyper, _quadratic_grad, [1.0, 1.0], steps)
    assert math.hypot(x, y) < 1e-3


@pytest.mark.parametrize(
    ("name", "hyper", "steps", "tol"),
    [
        ("sgd", {"lr": 1e-3, "momentum": 0.9}, 1500, 1e-2),
        ("adagrad", {"lr": 1.0}, 3000, 1e-1),  # the ever-shrinking step crawls along the valley floor
        ("rmsprop", {"lr": 1e-3, "momentum": 0.9}, 1500, 1e-2),
        ("adam", {"lr": 0.05, "betas": (0.9, 0.99)}, 1500, 1e-2),
        ("adamw", {"lr": 0.05, "betas": (0.9, 0.99), "weight_decay": 1e-4}, 1500, 1e-2),
        ("nadam", {"lr": 0.01, "betas": (0.9, 0.99), "momentum_decay": 0.04}, 1500, 2e-2),
    ],
)
def test_converges_on_rosenbrock(name, hyper, steps, tol):
    """From the classic start (-1.2, 1), within ``tol`` of the minimum (1, 1) after ``steps`` steps."""
    x, y = _descend(name, hyper, _rosenbrock_grad, [-1.2, 1.0], steps)
    assert math.hypot(x - 1, y - 1) < tol


def test_adadelta_cycles_across_the_rosenbrock_valley_instead_of_converging():
    """Adadelta is the exception: with its default decay it crosses into the valley (f falls from 24 to about
    0.4 in 1000 steps) and then bounces across it, RMS[g] stays near 17, and f creeps up again. Its step
    ratio RMS[Delta]/RMS[g] has no decaying learning rate to damp that cycle (Zeiler's eq. has none)."""

    def f(w):
        return (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2

    w1000, w2000 = _descend("adadelta", {"lr": 1.0}, _rosenbrock_grad, [-1.2, 1.0], 2000, every=1000)
    assert f([-1.2, 1.0]) == pytest.approx(24.2)
    assert f(w1000) < 0.5  # down into the valley quickly ...
    assert f(w2000) > f(w1000) > 0.3  # ... then no progress, well away from the minimum (f = 0)


# -- timing helper -------------------------------------------------------------------------------------------


def test_step_time_ratio_returns_both_times_and_their_ratio():
    out = step_time_ratio(SGD, torch.optim.SGD, n_tensors=4, width=8, repeats=2, min_time=0.002, momentum=0.9)
    assert set(out) == {"ours_s", "torch_s", "ratio"}
    assert out["ours_s"] > 0 and out["torch_s"] > 0
    assert out["ratio"] == pytest.approx(out["ours_s"] / out["torch_s"])


# -- argument checks -----------------------------------------------------------------------------------------

P = [torch.nn.Parameter(torch.ones(2))]


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda: SGD(P, lr=-0.1), ValueError, r"`lr` must be .*Received: lr=-0.1"),
        (lambda: SGD(P, lr="0.1"), TypeError, r"`lr` must be .*Received: lr='0.1'"),
        (lambda: SGD(P, momentum=-0.5), ValueError, r"`momentum` must be .*Received: momentum=-0.5"),
        (lambda: SGD(P, dampening=1.5), ValueError, r"`dampening` must be .*Received: dampening=1.5"),
        (lambda: SGD(P, weight_decay=-1), ValueError, r"`weight_decay` must be .*Received: weight_decay=-1"),
        (lambda: SGD(P, nesterov=True), ValueError, r"`momentum` must be > 0 when nesterov=True.*momentum=0"),
        (
            lambda: SGD(P, momentum=0.9, dampening=0.1, nesterov=True),
            ValueError,
            r"`dampening` must be 0 when nesterov=True.*Received: dampening=0.1",
        ),
        (lambda: SGD(P, nesterov=1), TypeError, r"`nesterov` must be True or False.*Received: nesterov=1"),
        (lambda: SGD(P, foreach="yes"), TypeError, r"`foreach` must be None, True or False"),
        (lambda: Adagrad(P, eps=0), ValueError, r"`eps` must be .*Received: eps=0"),
        (lambda: Adagrad(P, lr_decay=-1), ValueError, r"`lr_decay` must be .*Received: lr_decay=-1"),
        (
            lambda: Adagrad(P, initial_accumulator_value=-0.1),
            ValueError,
            r"`initial_accumulator_value` .*Received: initial_accumulator_value=-0.1",
        ),
        (lambda: optim.RMSprop(P, alpha=1.5), ValueError, r"`alpha` must be .*Received: alpha=1.5"),
        (lambda: optim.RMSprop(P, momentum=-1), ValueError, r"`momentum` must be .*Received: momentum=-1"),
        (lambda: optim.RMSprop(P, eps=-1e-8), ValueError, r"`eps` must be .*Received: eps=-1e-08"),
        (lambda: optim.RMSprop(P, centered=None), TypeError, r"`centered` must be True or False"),
        (lambda: optim.Adadelta(P, rho=1.1), ValueError, r"`rho` must be .*in \[0, 1\].*Received: rho=1.1"),
        (lambda: optim.Adadelta(P, rho=-0.1), ValueError, r"`rho` must be .*Received: rho=-0.1"),
        (lambda: Adam(P, betas=(1.0, 0.999)), ValueError, r"`betas\[0\]` must be .*\[0, 1\).*betas\[0\]=1.0"),
        (lambda: Adam(P, betas=(0.9, -0.1)), ValueError, r"`betas\[1\]` must be .*Received: betas\[1\]=-0.1"),
        (lambda: Adam(P, betas=0.9), TypeError, r"`betas` must be a pair .*Received: betas=0.9"),
        (lambda: Adam(P, eps=0.0), ValueError, r"`eps` must be .*Received: eps=0.0"),
        (lambda: Adam(P, amsgrad="no"), TypeError, r"`amsgrad` must be True or False"),
        (lambda: AdamW(P, weight_decay=-0.01), ValueError, r"`weight_decay` .*Received: weight_decay=-0.01"),
        (lambda: optim.NAdam(P, momentum_decay=-1), ValueError, r"`momentum_decay` .*momentum_decay=-1"),
        (lambda: optim.NAdam(P, betas=(0.9, 1.0)), ValueError, r"`betas\[1\]` .*Received: betas\[1\]=1.0"),
        # A param group's own values are checked too.
        (lambda: Adam([{"params": P, "lr": -1}]), ValueError, r"`lr` must be .*Received: lr=-1"),
        (lambda: torch_counterpart("lbfgs"), ValueError, r"`name` must be one of .*Received: name='lbfgs'"),
        (lambda: step_time_ratio(Adam, "adam"), TypeError, r"`theirs_cls` must be a torch.optim.Optimizer"),
        (
            lambda: step_time_ratio(Adam, Adam, n_tensors=0),
            ValueError,
            r"`n_tensors` .*Received: n_tensors=0",
        ),
    ],
)
def test_bad_input_is_rejected(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_checks_foreach_itself(name):
    # foreach="yes" would otherwise pass silently as truthy: each optimizer's _check_hyper must refuse it.
    with pytest.raises(TypeError, match=r"^`foreach` must be None, True or False\. Received: foreach='yes'$"):
        OPTIMIZERS[name](P, foreach="yes")


def test_complex_parameters_are_rejected():
    p = torch.nn.Parameter(torch.ones(2, dtype=torch.complex64))
    p.grad = torch.ones(2, dtype=torch.complex64)
    with pytest.raises(TypeError, match=r"`params` must be real tensors.*Received: params=torch.complex64"):
        Adam([p]).step()


def test_a_refused_param_group_leaves_the_optimizer_unchanged():
    opt = Adam(P)
    with pytest.raises(ValueError, match=r"`eps`"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))], "eps": -1.0})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize(
    ("name", "hyper"),
    [
        ("sgd", {"lr": 0.05, "momentum": 0.8, "dampening": 0.3}),
        ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
        ("adam", {"lr": 0.01, "weight_decay": 0.1}),
        ("adam", {"lr": 0.01, "amsgrad": True}),
    ],
)
def test_a_parameter_whose_first_gradient_comes_later_matches_torch(name, hyper, foreach):
    """The second tensor has no gradient for the first 3 steps, so on the multi-tensor path its momentum
    buffer is born while the first tensor's is already running (SGD's mixed branch, with dampening)."""
    runs = []
    for cls in (OPTIMIZERS[name], torch_counterpart(name)):
        g = torch.Generator().manual_seed(3)
        a, b = (torch.nn.Parameter(torch.randn(4, generator=g, dtype=F64)) for _ in range(2))
        b0 = b.detach().clone()
        opt = cls([a, b], **hyper, foreach=foreach)
        for step in range(8):
            opt.zero_grad()
            loss = (a.sin() * torch.arange(1.0, 5.0, dtype=F64)).sum()
            if step >= 3:
                loss = loss + (a * b).pow(2).sum() + b.cos().sum()
            loss.backward()
            opt.step()
        runs.append((a.detach().clone(), b.detach().clone(), b0))
    (a, b, b0), (ta, tb, _) = runs
    assert _max_diff([a, b], [ta, tb]) <= PARITY_ATOL
    assert (b - b0).abs().max() > 1e-3  # it did move once its gradient came


def test_adam_refuses_a_decoupled_weight_decay_that_is_not_a_bool_by_name():
    """Mutation survivor (issue 25): the refusal names the argument."""
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(TypeError) as raised:
        Adam([p], weight_decay=0.1, decoupled_weight_decay=1)
    assert str(raised.value) == (
        "`decoupled_weight_decay` must be True or False. Received: decoupled_weight_decay=1"
    )
