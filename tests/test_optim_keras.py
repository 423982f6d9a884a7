"""dltricks.optim against keras.optimizers (TensorFlow backend, float32): parity where the two conventions
agree, and each documented difference (the "Keras differences" paragraphs of the class docstrings) shown both
ways: the default settings disagree, and the stated conversion reproduces Keras.

Every run starts from the same float32 weights (a 4x3 and a 5-vector) and follows the gradient of a diagonal
quadratic, 0.5 * sum(h * (w - c)^2) with curvatures h between 0.1 and 10, computed in numpy from each
framework's own current weights, for STEPS steps.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch

from dltricks.optim import SGD, Adadelta, Adagrad, Adam, AdamW, NAdam, RMSprop

pytestmark = [
    pytest.mark.keras,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed"),
]

STEPS = 30
# float32 agreement after STEPS steps, on weights of order 1. Most optimizers agree to a few 1e-7; Adam and
# NAdam's Keras code raises beta2 to the power t in float32, and 1 - 0.999**t then carries a relative error
# up to ~1e-4 at t = 1 (measured effect on the weights: 1.5e-5), hence the looser ADAM_ATOL.
ATOL = 5e-6
ADAM_ATOL = 5e-5
# "They differ": at least this far apart (the measured gaps are 0.04 to 1.9).
APART = 1e-2

_rng = np.random.default_rng(0)
START = [_rng.standard_normal((4, 3)).astype(np.float32), _rng.standard_normal(5).astype(np.float32)]
CURVATURE = [(10.0 ** _rng.uniform(-1, 1, w.shape)).astype(np.float32) for w in START]
CENTER = [_rng.standard_normal(w.shape).astype(np.float32) for w in START]


def _grad(i, w):
    return (CURVATURE[i] * (w - CENTER[i])).astype(np.float32)


@pytest.fixture(scope="module")
def keras():
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def run_keras(keras, opt, lrs=None):
    """Weights after STEPS ``apply_gradients`` calls of a Keras optimizer (``lrs``: a rate per step)."""
    variables = [keras.Variable(w.copy()) for w in START]
    for t in range(STEPS):
        if lrs is not None:
            opt.learning_rate = lrs[t]
        opt.apply_gradients([(_grad(i, v.numpy()), v) for i, v in enumerate(variables)])
    return [v.numpy() for v in variables]


def run_ours(make, lrs=None, before_step=None):
    """Weights after STEPS steps of ``make(params)``; ``before_step(opt, t)`` may edit it before step t+1."""
    params = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in START]
    opt = make(params)
    for t in range(STEPS):
        if lrs is not None:
            for group in opt.param_groups:
                group["lr"] = lrs[t]
        if before_step is not None:
            before_step(opt, t)
        for i, p in enumerate(params):
            p.grad = torch.from_numpy(_grad(i, p.detach().numpy()))
        opt.step()
    return [p.detach().numpy() for p in params]


def run_numpy(update, state_names):
    """Weights after STEPS steps of a formula written out in numpy (float32): ``update(w, g, state, t)``."""
    weights = [w.copy() for w in START]
    states = [{name: np.zeros_like(w) for name in state_names} for w in weights]
    for t in range(1, STEPS + 1):
        for i, w in enumerate(weights):
            update(w, _grad(i, w), states[i], t)
    return weights


def gap(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


# -- SGD: the learning rate inside (Keras) or outside (torch) the velocity -----------------------------------

RATE_CHANGE = 10  # the step at which the learning rate drops from 0.05 to 0.005
LRS = [0.05 if t < RATE_CHANGE else 0.005 for t in range(STEPS)]


def _rescale_buffers(opt, t):
    """The documented conversion: on a change of rate eta -> eta', multiply each momentum_buffer by
    eta/eta'."""
    if t == RATE_CHANGE:
        for group in opt.param_groups:
            for p in group["params"]:
                opt.state[p]["momentum_buffer"].mul_(LRS[t - 1] / LRS[t])


@pytest.mark.parametrize("nesterov", [False, True], ids=["momentum", "nesterov"])
def test_sgd_momentum_agrees_with_keras_at_a_constant_rate(keras, nesterov):
    theirs = run_keras(keras, keras.optimizers.SGD(0.02, momentum=0.9, nesterov=nesterov))
    ours = run_ours(lambda p: SGD(p, lr=0.02, momentum=0.9, nesterov=nesterov))
    assert gap(ours, theirs) <= ATOL


@pytest.mark.parametrize("nesterov", [False, True], ids=["momentum", "nesterov"])
def test_sgd_momentum_differs_from_keras_after_a_rate_change(keras, nesterov):
    """Keras: v = m v - lr g, w += v; here b = m b + g, w -= lr b. After the rate drops the Keras velocity
    still carries the old rate's steps; rescaling the buffers by lr_old/lr_new reproduces Keras, and so does
    Keras' formula written out in numpy."""
    theirs = run_keras(keras, keras.optimizers.SGD(0.05, momentum=0.9, nesterov=nesterov), LRS)
    ours = run_ours(lambda p: SGD(p, lr=0.05, momentum=0.9, nesterov=nesterov), LRS)
    assert gap(ours, theirs) > APART
    converted = run_ours(lambda p: SGD(p, lr=0.05, momentum=0.9, nesterov=nesterov), LRS, _rescale_buffers)
    assert gap(converted, theirs) <= ATOL

    def keras_formula(w, g, s, t):
        lr = np.float32(LRS[t - 1])
        s["v"][...] = 0.9 * s["v"] - lr * g
        w += 0.9 * s["v"] - lr * g if nesterov else s["v"]

    assert gap(run_numpy(keras_formula, ["v"]), theirs) <= ATOL


# -- Adam / AdamW: epsilon hat -------------------------------------------------------------------------------


def _eps_hat(eps_keras):
    """The documented conversion: before step t, eps = eps_keras / sqrt(1 - beta2^t)."""

    def before_step(opt, t):
        for group in opt.param_groups:
            group["eps"] = eps_keras / (1 - group["betas"][1] ** (t + 1)) ** 0.5

    return before_step


@pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
def test_adam_agrees_with_keras_when_epsilon_is_negligible(keras, amsgrad):
    theirs = run_keras(keras, keras.optimizers.Adam(0.05, epsilon=1e-7, amsgrad=amsgrad))
    ours = run_ours(lambda p: Adam(p, lr=0.05, eps=1e-7, amsgrad=amsgrad))
    assert gap(ours, theirs) <= ADAM_ATOL


@pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
def test_adam_epsilon_hat_differs_and_the_conversion_reproduces_keras(keras, amsgrad):
    """Keras: w -= lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(v) + eps_hat). With eps = 0.1 (of the order of
    sqrt(v)) the two differ; eps = eps_hat / sqrt(1 - b2^t) at each step makes ours Keras'."""
    theirs = run_keras(keras, keras.optimizers.Adam(0.05, epsilon=0.1, amsgrad=amsgrad))
    ours = run_ours(lambda p: Adam(p, lr=0.05, eps=0.1, amsgrad=amsgrad))
    assert gap(ours, theirs) > APART
    converted = run_ours(lambda p: Adam(p, lr=0.05, eps=0.1, amsgrad=amsgrad), before_step=_eps_hat(0.1))
    assert gap(converted, theirs) <= ADAM_ATOL


def test_keras_weight_decay_is_decoupled_like_adamw(keras):
    """keras AdamW(weight_decay) = ours AdamW; and keras Adam(weight_decay) is also AdamW, not our L2 Adam."""
    theirs_adamw = run_keras(keras, keras.optimizers.AdamW(0.05, weight_decay=0.1, epsilon=1e-7))
    theirs_adam = run_keras(keras, keras.optimizers.Adam(0.05, weight_decay=0.1, epsilon=1e-7))
    ours_adamw = run_ours(lambda p: AdamW(p, lr=0.05, weight_decay=0.1, eps=1e-7))
    ours_adam_l2 = run_ours(lambda p: Adam(p, lr=0.05, weight_decay=0.1, eps=1e-7))
    assert gap(ours_adamw, theirs_adamw) <= ADAM_ATOL
    assert gap(ours_adamw, theirs_adam) <= ADAM_ATOL
    assert gap(ours_adam_l2, theirs_adam) > APART


# -- NAdam: the momentum schedule ----------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [1e-7, 0.1])
def test_keras_nadam_is_ours_with_momentum_decay_one(keras, eps):
    """Keras' u_t = b1 (1 - 0.5 * 0.96^t) is torch's mu_t = b1 (1 - 0.5 * 0.96^(t psi)) with psi = 1, not
    the default 0.004; epsilon is added to sqrt(v_hat) in both, so they agree even for a large eps."""
    theirs = run_keras(keras, keras.optimizers.Nadam(0.05, epsilon=eps))
    assert gap(run_ours(lambda p: NAdam(p, lr=0.05, eps=eps, momentum_decay=1.0)), theirs) <= ADAM_ATOL
    assert gap(run_ours(lambda p: NAdam(p, lr=0.05, eps=eps)), theirs) > APART


# -- RMSprop: epsilon inside the root, the rate inside the momentum ------------------------------------------


@pytest.mark.parametrize(
    "options", [{}, {"centered": True}, {"momentum": 0.5}], ids=["plain", "centered", "momentum"]
)
def test_rmsprop_agrees_with_keras_at_matched_settings(keras, options):
    """alpha = rho = 0.9 and a negligible eps (Keras' default rho is 0.9, torch's alpha 0.99)."""
    theirs = run_keras(keras, keras.optimizers.RMSprop(0.01, rho=0.9, epsilon=1e-10, **options))
    ours = run_ours(lambda p: RMSprop(p, lr=0.01, alpha=0.9, eps=1e-10, **options))
    assert gap(ours, theirs) <= ATOL


def test_rmsprop_epsilon_inside_the_root_differs(keras):
    """Keras divides by sqrt(v + eps), torch by sqrt(v) + eps: with eps = 0.1 they differ, and Keras'
    formula written out reproduces Keras."""
    theirs = run_keras(keras, keras.optimizers.RMSprop(0.01, rho=0.9, epsilon=0.1))
    assert gap(run_ours(lambda p: RMSprop(p, lr=0.01, alpha=0.9, eps=0.1)), theirs) > APART

    def keras_formula(w, g, s, t):
        s["v"][...] = 0.9 * s["v"] + 0.1 * g * g
        w -= 0.01 * g / np.sqrt(s["v"] + np.float32(0.1))

    assert gap(run_numpy(keras_formula, ["v"]), theirs) <= ATOL


def test_rmsprop_momentum_holds_the_rate_in_keras(keras):
    """As for SGD: after a change of rate they differ, and rescaling the buffers reproduces Keras."""
    theirs = run_keras(keras, keras.optimizers.RMSprop(0.05, rho=0.9, momentum=0.5, epsilon=1e-10), LRS)
    ours = run_ours(lambda p: RMSprop(p, lr=0.05, alpha=0.9, momentum=0.5, eps=1e-10), LRS)
    assert gap(ours, theirs) > APART
    converted = run_ours(
        lambda p: RMSprop(p, lr=0.05, alpha=0.9, momentum=0.5, eps=1e-10), LRS, _rescale_buffers
    )
    assert gap(converted, theirs) <= ATOL


# -- Adagrad and Adadelta: defaults --------------------------------------------------------------------------


def test_adagrad_matches_keras_with_its_initial_accumulator(keras):
    """Keras starts the accumulator at 0.1 and adds eps inside the root; with s_0 = 0.1 and a small eps ours
    agrees, with torch's s_0 = 0 the first step is lr * sign(g) and the runs differ."""
    theirs = run_keras(keras, keras.optimizers.Adagrad(0.1))  # initial_accumulator_value=0.1, epsilon=1e-7
    assert gap(run_ours(lambda p: Adagrad(p, lr=0.1, initial_accumulator_value=0.1)), theirs) <= ATOL
    assert gap(run_ours(lambda p: Adagrad(p, lr=0.1)), theirs) > APART


def test_adadelta_is_the_same_formula_with_other_defaults(keras):
    theirs = run_keras(keras, keras.optimizers.Adadelta(1.0, rho=0.95, epsilon=1e-6))
    assert gap(run_ours(lambda p: Adadelta(p, lr=1.0, rho=0.95, eps=1e-6)), theirs) <= ATOL
    # Keras' defaults (lr=0.001, rho=0.95, eps=1e-7) barely move the weights; torch's (lr=1) do.
    keras_default = run_keras(keras, keras.optimizers.Adadelta())
    assert gap(keras_default, START) < 1e-4
    assert gap(run_ours(lambda p: Adadelta(p)), keras_default) > APART
