"""Knowledge distillation (dltricks.distill): the loss against a float64 formula, Keras and the paper."""

from __future__ import annotations

import copy
import importlib.util
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from dltricks import distill
from dltricks.batches import TensorBatches
from dltricks.train import fit

HAVE_TF = importlib.util.find_spec("tensorflow") is not None


def logits(
    seed: int, batch: int = 8, classes: int = 10, scale: float = 3.0, dtype=torch.float64
) -> torch.Tensor:
    return scale * torch.randn(batch, classes, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def by_hand(z: np.ndarray, v: np.ndarray, t: float) -> float:
    """T^2 * (1/B) * sum_b sum_i p_bi log(p_bi / q_bi), p = softmax(v/T), q = softmax(z/T), in float64."""

    def softmax(a):
        e = np.exp(a - a.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p, q = softmax(v / t), softmax(z / t)
    return t**2 * float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


@pytest.mark.parametrize("t", [0.5, 1.0, 2.5, 4.0, 20.0])
def test_loss_equals_the_float64_formula(t):
    z, v = logits(0), logits(1)
    ours = distill.distillation_loss(z, v, t).item()
    assert ours == pytest.approx(by_hand(z.numpy(), v.numpy(), t), rel=1e-12, abs=1e-15)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000), t=st.floats(0.3, 50.0), batch=st.integers(1, 16), classes=st.integers(2, 12)
)
def test_loss_is_nonnegative_and_zero_only_for_matching_logits(seed, t, batch, classes):
    z, v = logits(seed, batch, classes), logits(seed + 1, batch, classes)
    assert distill.distillation_loss(z, v, t).item() >= -1e-12
    shifted = v + torch.randn(
        batch, 1, dtype=torch.float64
    )  # a constant per row leaves the softmax unchanged
    assert distill.distillation_loss(shifted, v, t).item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.filterwarnings("ignore:reduction:UserWarning")
def test_batch_mean_not_elementwise_mean_and_the_t_squared_factor():
    """The two silent bugs: KLDivLoss(reduction="mean") divides by batch x classes; forgetting T^2."""
    t, z, v = 4.0, logits(2), logits(3)
    reference = by_hand(z.numpy(), v.numpy(), t)
    log_q, log_p = F.log_softmax(z / t, 1), F.log_softmax(v / t, 1)
    mean_reduction = F.kl_div(log_q, log_p, reduction="mean", log_target=True).item() * t**2
    no_t_squared = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True).item()
    ours = distill.distillation_loss(z, v, t).item()
    assert ours == pytest.approx(reference, rel=1e-12)
    # Either bug changes the value by a large factor (10 classes, T^2 = 16): this test would catch both.
    assert mean_reduction == pytest.approx(reference / 10, rel=1e-12)
    assert no_t_squared == pytest.approx(reference / 16, rel=1e-12)
    assert (
        abs(mean_reduction - reference) > 0.5 * reference and abs(no_t_squared - reference) > 0.5 * reference
    )


@pytest.mark.parametrize("t", [1.0, 3.0, 20.0])
def test_gradient_is_the_papers_eq_2_times_t_squared(t):
    """d/dz_i of T^2 KL(p || q) is T (q_i - p_i): Hinton et al. 2015, eq. 2, (q_i - p_i) / T, times T^2."""
    z, v = logits(4).requires_grad_(True), logits(5)
    distill.distillation_loss(z, v, t).backward()
    p, q = torch.softmax(v / t, 1), torch.softmax(z.detach() / t, 1)
    expected = t * (q - p) / z.shape[0]  # the batch mean divides by B
    torch.testing.assert_close(z.grad, expected, rtol=1e-12, atol=1e-15)


def test_high_temperature_limit_is_logit_matching():
    """For zero-mean logits and large T the gradient tends to (z_i - v_i) / N (the paper's eq. 3 and 4)."""
    z, v = logits(6), logits(7)
    z, v = (z - z.mean(1, keepdim=True)).requires_grad_(True), v - v.mean(1, keepdim=True)
    n_classes, batch = z.shape[1], z.shape[0]
    expected = (z.detach() - v) / (n_classes * batch)
    for t, tol in ((100.0, 0.05), (1000.0, 5e-3), (10_000.0, 5e-4)):
        z.grad = None
        distill.distillation_loss(z, v, t).backward()
        rel = (z.grad - expected).norm() / expected.norm()
        assert rel < tol, (t, rel.item())


def test_gradient_size_does_not_shrink_with_temperature():
    """With T^2 the soft term's gradient keeps its size as T grows; without it, it would fall as 1/T^2."""
    z, v = logits(8).requires_grad_(True), logits(9)
    norms = []
    for t in (5.0, 10.0, 20.0, 40.0):
        z.grad = None
        distill.distillation_loss(z, v, t).backward()
        norms.append(z.grad.norm().item())
    assert max(norms) / min(norms) < 2.0, norms  # without T^2 the ratio would be about 64


def test_teacher_receives_no_gradient_and_does_not_change():
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(16, 3)
    )
    teacher.train()
    before = copy.deepcopy(teacher.state_dict())
    x = torch.randn(64, 6)
    y = torch.randint(0, 3, (64,))
    # Straight through the loss: even logits that require grad get none back.
    v = teacher(x)
    z = torch.randn(64, 3, requires_grad=True)
    distill.distillation_loss(z, v, 3.0).backward()
    assert all(p.grad is None for p in teacher.parameters())
    # Cached logits: computed in eval mode (deterministic), the mode restored, no graph kept.
    cached = distill.teacher_logits(teacher, x, batch_size=10)
    assert teacher.training and not cached.requires_grad
    torch.testing.assert_close(cached, distill.teacher_logits(teacher, x))
    student = torch.nn.Linear(6, 3)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    batches = TensorBatches(x, distill.pack_targets(y, cached), 16)
    hist = fit(student, batches, opt, epochs=5, loss_fn=distill.DistillationLoss(2.0, 0.7), progress=False,
               metrics={"accuracy": distill.accuracy}, eval_train=True)  # fmt: skip
    assert len(hist) == 5 and 0.0 <= hist["train_accuracy"][-1] <= 1.0
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in teacher.parameters())


def test_combined_loss_weights_and_plain_labels():
    z, v = logits(10), logits(11)
    y = torch.randint(0, 10, (z.shape[0],), generator=torch.Generator().manual_seed(0))
    packed = distill.pack_targets(y, v)
    labels, teacher = distill.unpack_targets(packed)
    assert torch.equal(labels, y) and torch.equal(teacher, v)
    soft, hard = distill.distillation_loss(z, v, 3.0), F.cross_entropy(z, y)
    for alpha in (0.0, 0.25, 1.0):
        got = distill.DistillationLoss(3.0, alpha)(z, packed)
        torch.testing.assert_close(
            torch.as_tensor(got, dtype=torch.float64), alpha * soft + (1 - alpha) * hard
        )
    torch.testing.assert_close(distill.DistillationLoss(3.0, 0.9)(z, y), hard)  # validation batches
    assert distill.accuracy(z, packed) == distill.accuracy(z, y)


def test_soft_targets_and_ensemble_average():
    members = [logits(s) for s in (12, 13, 14)]
    for t in (1.0, 4.0):
        average = torch.stack([distill.soft_targets(v, t) for v in members]).mean(0)
        torch.testing.assert_close(distill.soft_targets(distill.ensemble_logits(members, t), t), average)
    one = distill.ensemble_logits(members[:1], 2.0)
    torch.testing.assert_close(torch.softmax(one / 2.0, 1), torch.softmax(members[0] / 2.0, 1))
    torch.testing.assert_close(
        distill.soft_targets(members[0], 1.0).sum(1), torch.ones(8, dtype=torch.float64)
    )


BAD = [
    (lambda: distill.soft_targets(logits(0), 0.0), ValueError, "`temperature` must be"),
    (lambda: distill.soft_targets(logits(0), -1.0), ValueError, "Received: temperature=-1.0"),
    (lambda: distill.distillation_loss(logits(0), logits(1), float("nan")), ValueError, "`temperature`"),
    (lambda: distill.distillation_loss(logits(0), logits(1), "4"), TypeError, "`temperature`"),
    (lambda: distill.distillation_loss(logits(0), logits(1, batch=3), 2.0), ValueError, "`teacher_logits`"),
    (lambda: distill.distillation_loss(torch.zeros(4), logits(1), 2.0), ValueError, "`student_logits`"),
    (lambda: distill.DistillationLoss(temperature=0), ValueError, "Received: temperature=0"),
    (lambda: distill.DistillationLoss(alpha=1.5), ValueError, "`alpha` must be .*Received: alpha=1.5"),
    (lambda: distill.DistillationLoss(alpha=-0.1), ValueError, "`alpha`"),
    (lambda: distill.DistillationLoss(alpha=True), TypeError, "`alpha`"),
    (lambda: distill.pack_targets(torch.zeros(8), logits(0)), ValueError, "`labels`"),
    (lambda: distill.ensemble_logits([], 2.0), TypeError, "`logits`"),
    (lambda: distill.ensemble_logits([logits(0), logits(1, batch=2)], 2.0), ValueError, r"`logits\[1\]`"),
    (lambda: distill.teacher_logits("net", torch.zeros(2, 3)), TypeError, "`teacher`"),
]


@pytest.mark.parametrize(("call", "error", "match"), BAD)
def test_bad_arguments_are_rejected_naming_them(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.keras
@pytest.mark.skipif(not HAVE_TF, reason="TensorFlow is not installed")
@pytest.mark.parametrize(("t", "w"), [(3.0, 0.5), (1.0, 0.1), (20.0, 0.0), (4.0, 1.0)])
def test_matches_keras_distiller_with_logits_distillation(t, w):
    """Keras: ``w * hard + (1 - w) * T^2 * mean KL``; ours with ``alpha = 1 - w``.

    Float32, and Keras clips p and q at 1e-7, hence the tolerance."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.integers(0, 5, size=32)
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5)])
    student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5)])
    # An instance, not the default string: Keras 3.15 resolves loss="kl_divergence" to the plain function,
    # which misses the softmax-and-T^2 branch (an isinstance check on KLDivergence); see the test below.
    kd = keras.distillation.LogitsDistillation(temperature=t, loss=keras.losses.KLDivergence())
    distiller = keras.distillation.Distiller(teacher, student, kd, student_loss_weight=w)
    distiller.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    v = keras.ops.convert_to_numpy(teacher(x))
    z = keras.ops.convert_to_numpy(student(x))
    keras_total = float(keras.ops.convert_to_numpy(distiller.compute_loss(x=x, y=y, y_pred=student(x))))
    keras_soft = float(keras.ops.convert_to_numpy(kd.compute_loss(v, z)))
    zt, vt = torch.from_numpy(z).double(), torch.from_numpy(v).double()
    ours_total = distill.DistillationLoss(t, 1.0 - w)(zt, distill.pack_targets(torch.from_numpy(y), vt))
    assert keras_soft == pytest.approx(distill.distillation_loss(zt, vt, t).item(), rel=1e-4, abs=1e-6)
    assert keras_total == pytest.approx(float(ours_total), rel=1e-4, abs=1e-6)


def test_fit_distils_a_teacher_into_a_student():
    """End to end: on the soft term alone, a student trained on cached logits agrees with its teacher."""
    torch.manual_seed(0)
    x = torch.randn(512, 8)
    teacher = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
    v = distill.teacher_logits(teacher, x)
    y = v.argmax(1)
    student = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
    agree_before = (student(x).argmax(1) == y).float().mean().item()
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    fit(student, TensorBatches(x, distill.pack_targets(y, v), 64), opt, epochs=30,
        loss_fn=distill.DistillationLoss(4.0, 1.0), progress=False)  # fmt: skip
    with torch.no_grad():
        agree = (student(x).argmax(1) == y).float().mean().item()
    assert agree > 0.9 and agree > agree_before + 0.3
    assert not math.isnan(agree)


@pytest.mark.keras
@pytest.mark.skipif(not HAVE_TF, reason="TensorFlow is not installed")
def test_keras_default_string_loss_is_either_fixed_or_the_known_logit_kl():
    """Keras 3.15's ``LogitsDistillation()`` (``loss="kl_divergence"``) applies KL to the *scaled logits*.

    They are clipped to [1e-7, 1], with no softmax and no T^2. Accept that (documented in the chapter) or the
    fixed behavior."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    t = 3.0
    z, v = logits(20, scale=2.0, dtype=torch.float32), logits(21, scale=2.0, dtype=torch.float32)
    got = float(keras.ops.convert_to_numpy(keras.distillation.LogitsDistillation(temperature=t).compute_loss(
        v.numpy(), z.numpy())))  # fmt: skip
    p, q = np.clip(v.numpy() / t, 1e-7, 1.0), np.clip(z.numpy() / t, 1e-7, 1.0)
    logit_kl = float(np.mean(np.sum(p * np.log(p / q), axis=1)))
    fixed = distill.distillation_loss(z.double(), v.double(), t).item()
    assert got == pytest.approx(logit_kl, rel=1e-4) or got == pytest.approx(fixed, rel=1e-4), (
        got,
        logit_kl,
        fixed,
    )


# --- precision: labels stay exact, losses stay float32 (issue 25) ------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "label"),
    [(torch.bfloat16, 257), (torch.bfloat16, 999), (torch.float16, 2049), (torch.float32, 2**24 + 1)],
)
def test_packed_labels_stay_exact_whatever_the_teachers_dtype(dtype, label):
    y = torch.tensor([label, 3, label - 1])
    v = logits(30, batch=3, classes=4).to(dtype)
    packed = distill.pack_targets(y, v)
    labels, teacher = distill.unpack_targets(packed)
    assert torch.equal(labels, y)
    assert packed.dtype in (torch.float32, torch.float64)
    torch.testing.assert_close(teacher, v.to(teacher.dtype), rtol=0, atol=0)  # the logits are not altered


def test_labels_beyond_float64_are_refused():
    with pytest.raises(ValueError, match=r"`labels` must be .*2\*\*53"):
        distill.pack_targets(torch.tensor([2**53 + 2, 0]), logits(0, batch=2, classes=3))


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_the_loss_is_float32_under_bfloat16_autocast_on_the_cpu(alpha):
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 50)
    x = torch.randn(64, 16)
    y = torch.randint(0, 50, (64,))
    v = 5 * torch.randn(64, 50)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = layer(x)
        assert z.dtype == torch.bfloat16  # the case in question: autocast gives bfloat16 logits
        got = distill.DistillationLoss(4.0, alpha)(z, distill.pack_targets(y, v))
        soft = distill.distillation_loss(z, v.bfloat16(), 4.0)
    z64 = z.double()
    reference = alpha * distill.distillation_loss(z64, v.double(), 4.0) + (1 - alpha) * F.cross_entropy(
        z64, y
    )
    assert got.dtype == torch.float32 and soft.dtype == torch.float32
    assert got.item() == pytest.approx(reference.item(), rel=1e-5)
    ref_soft = distill.distillation_loss(z64, v.bfloat16().double(), 4.0)
    assert soft.item() == pytest.approx(ref_soft.item(), rel=1e-5)


# --- defaults, input checks and boundaries pinned (mutation testing) ----------------------------------------


def test_defaults_are_pinned():
    z, v = logits(40), logits(41)
    assert distill.distillation_loss(z, v).item() == distill.distillation_loss(z, v, 4.0).item()
    torch.testing.assert_close(distill.soft_targets(z), torch.softmax(z, 1))
    members = [logits(42), logits(43)]
    torch.testing.assert_close(distill.ensemble_logits(members), distill.ensemble_logits(members, 1.0))
    loss = distill.DistillationLoss()
    assert (loss.temperature, loss.alpha) == (4.0, 0.9)
    assert repr(loss) == "DistillationLoss(temperature=4, alpha=0.9)"
    assert repr(distill.DistillationLoss(2.5, 0.25)) == "DistillationLoss(temperature=2.5, alpha=0.25)"


def test_teacher_logits_batches_by_1000_by_default_and_honours_batch_size_and_device():
    teacher = torch.nn.Linear(3, 2)
    sizes = []
    teacher.register_forward_hook(lambda m, a, out: sizes.append(a[0].shape[0]))
    x = torch.randn(1500, 3)
    out = distill.teacher_logits(teacher, x)
    assert sizes == [1000, 500] and out.shape == (1500, 2)
    sizes.clear()
    distill.teacher_logits(teacher, x[:10], batch_size=4, device="cpu")
    assert sizes == [4, 4, 2]
    with pytest.raises(ValueError, match=r"`batch_size` must be .*Received: batch_size=0"):
        distill.teacher_logits(teacher, x, batch_size=0)
    with pytest.raises(TypeError, match="`x`"):
        distill.teacher_logits(teacher, "x")


def test_packed_dtype_at_the_exactness_boundaries():
    v = logits(44, batch=2, classes=3, dtype=torch.bfloat16)
    assert distill.pack_targets(torch.tensor([2**24, 0]), v).dtype == torch.float32  # 2**24 is exact
    assert distill.pack_targets(torch.tensor([-(2**24) - 1, 0]), v).dtype == torch.float64
    assert distill.pack_targets(torch.tensor([2**24 + 1, 0]), v).dtype == torch.float64
    assert distill.pack_targets(torch.tensor([3, 0]), v.double()).dtype == torch.float64  # never narrowed
    big = distill.pack_targets(torch.tensor([2**53, 0]), v)  # exact in float64: accepted
    assert distill.unpack_targets(big)[0].tolist() == [2**53, 0]


def test_half_logits_give_a_float32_loss_and_float64_stays_float64():
    z, v = logits(45), logits(46)
    for dtype in (torch.float16, torch.bfloat16):
        got = distill.distillation_loss(z.to(dtype), v.to(dtype), 2.0)
        ref = distill.distillation_loss(z.to(dtype).double(), v.to(dtype).double(), 2.0)
        assert got.dtype == torch.float32 and got.item() == pytest.approx(ref.item(), rel=1e-5)
    assert distill.distillation_loss(z, v, 2.0).dtype == torch.float64
    y = torch.zeros(8, dtype=torch.long)
    assert distill.DistillationLoss(2.0, 0.5)(z.half(), y).dtype == torch.float32  # plain labels too


def test_a_term_with_zero_weight_is_not_computed():
    z, y = logits(47), torch.zeros(8, dtype=torch.long)
    v = torch.full_like(z, float("nan"))
    hard_only = distill.DistillationLoss(2.0, 0.0)(z, distill.pack_targets(y, v))
    assert hard_only.item() == pytest.approx(F.cross_entropy(z, y).item())  # 0 * NaN would be NaN
    v = logits(48)
    not_a_class = distill.pack_targets(torch.full((8,), -5), v)  # cross-entropy would raise on it
    soft_only = distill.DistillationLoss(2.0, 1.0)(z, not_a_class)
    assert soft_only.item() == pytest.approx(distill.distillation_loss(z, v, 2.0).item())


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: distill.pack_targets(torch.zeros(8, 1, dtype=torch.long), logits(0)),
            ValueError,
            "`labels`",
        ),
        (lambda: distill.pack_targets(torch.zeros(7, dtype=torch.long), logits(0)), ValueError, "length 8"),
        (lambda: distill.pack_targets([1, 2], logits(0)), TypeError, "`labels`"),
        (lambda: distill.soft_targets(torch.zeros(0, 3)), ValueError, r"`logits` must .*\(0, 3\)"),
        (lambda: distill.soft_targets(torch.zeros(2, 1)), ValueError, r"classes >= 2"),
        (lambda: distill.soft_targets([[1.0, 2.0]]), TypeError, "`logits`"),
        (lambda: distill.ensemble_logits(logits(0)), TypeError, "`logits` must be a non-empty sequence"),
        (lambda: distill.ensemble_logits([logits(0)], 0.0), ValueError, "`temperature`"),
    ],
)
def test_more_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_accuracy_against_known_values():
    z = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 1.0], [1.0, 0.0, 4.0], [5.0, 1.0, 0.0]])
    y = torch.tensor([0, 1, 0, 0])  # right on examples 0, 1 and 3: 0.75 (0.5 would not tell == from !=)
    assert distill.accuracy(z, y).item() == 0.75
    assert distill.accuracy(z, distill.pack_targets(y, logits(50, batch=4, classes=3))).item() == 0.75


def test_ensemble_logits_are_log_probabilities_times_t():
    members = [logits(s) for s in (51, 52, 53)]
    for t in (1.0, 3.0):
        out = distill.ensemble_logits(members, t)
        torch.testing.assert_close((out / t).exp().sum(1), torch.ones(8, dtype=torch.float64))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: distill.ensemble_logits(iter([logits(0)])), r"`logits` must be a non-empty sequence"),
        (lambda: distill.ensemble_logits(logits(0)), r"Received: logits='Tensor'"),
        (lambda: distill.ensemble_logits([torch.zeros(3)]), r"`logits\[0\]` must be"),
        (
            lambda: distill.ensemble_logits([logits(0), torch.zeros(3)]),
            r"`logits\[1\]` must be a tensor of shape",
        ),
        (
            lambda: distill.ensemble_logits([logits(0), logits(1, batch=2)]),
            r"of shape \(8, 10\) like logits\[0\]",
        ),
    ],
)
def test_ensemble_argument_messages(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()


def test_the_public_functions_warn_nothing_on_ordinary_input():
    """No warning reaches the user (torch's implicit-dim deprecation warning included)."""
    z, v, y = logits(60), logits(61), torch.zeros(8, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        distill.distillation_loss(z, v, 2.0)
        distill.DistillationLoss(2.0, 0.5)(z, distill.pack_targets(y, v))
        distill.ensemble_logits([z, v], 2.0)
        distill.soft_targets(z, 2.0)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: distill.soft_targets("z"),
            TypeError,
            "`logits` must be a torch.Tensor of logits. Received: logits='z'",
        ),
        (
            lambda: distill.distillation_loss(logits(0), torch.zeros(8)),
            ValueError,
            "`teacher_logits` must be a tensor of shape (batch, classes) with batch >= 1 and classes >= 2. "
            "Received: teacher_logits='tensor of shape (8,)'",
        ),
        (
            lambda: distill.distillation_loss(logits(0), logits(1, batch=3)),
            ValueError,
            "`teacher_logits` must be of the student's shape (8, 10). "
            "Received: teacher_logits='tensor of shape (3, 10)'",
        ),
        (
            lambda: distill.pack_targets([1, 2], logits(0)),
            TypeError,
            "`labels` must be a torch.Tensor of integer labels. Received: labels=[1, 2]",
        ),
        (
            lambda: distill.pack_targets(torch.zeros(8, dtype=torch.long), torch.zeros(8, 1)),
            ValueError,
            "`teacher_logits` must be a tensor of shape (batch, classes) with batch >= 1 and classes >= 2. "
            "Received: teacher_logits='tensor of shape (8, 1)'",
        ),
        (
            lambda: distill.pack_targets(torch.zeros(7), logits(0)),
            ValueError,
            "`labels` must be a 1-D integer tensor of length 8. "
            "Received: labels='tensor of shape (7,) and dtype torch.float32'",
        ),
        (
            lambda: distill.pack_targets(torch.tensor([2**53 + 2, 0]), logits(0, batch=2, classes=3)),
            ValueError,
            "`labels` must be integers of magnitude at most 2**53 (exact in float64). "
            f"Received: labels={2**53 + 2}",
        ),
        (
            lambda: distill.ensemble_logits([logits(0), logits(1, batch=2)]),
            ValueError,
            "`logits[1]` must be of shape (8, 10) like logits[0]. "
            "Received: logits[1]='tensor of shape (2, 10)'",
        ),
    ],
)
def test_refusals_word_for_word(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert str(info.value) == message
