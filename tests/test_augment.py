"""Batch augmentation: exact shifts of a known image, flips, label masks, devices, and clean evaluation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltricks.augment import Augmented, random_flip, random_shift, shift, shift_and_flip
from dltricks.batches import TensorBatches
from dltricks.train import evaluate, fit


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _dot(n=3, c=2, h=7, w=9, at=(3, 4)):
    x = torch.zeros(n, c, h, w)
    x[:, :, at[0], at[1]] = 1.0
    return x


def test_shift_moves_a_bright_pixel_by_the_given_offsets():
    x = _dot()
    dy, dx = torch.tensor([0, 2, -3]), torch.tensor([1, -4, 0])
    out = shift(x, dy, dx)
    for n in range(3):
        expected = torch.zeros(2, 7, 9)
        expected[:, 3 + dy[n], 4 + dx[n]] = 1.0
        assert torch.equal(out[n], expected)


def test_zero_shift_is_the_identity():
    x = torch.randn(4, 3, 5, 6)
    assert torch.equal(shift(x, torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long)), x)
    assert torch.equal(random_shift(x, 0, generator=_gen()), x)


def test_shifting_out_of_the_image_leaves_only_the_fill():
    x = torch.randn(2, 1, 4, 4)
    out = shift(x, torch.tensor([4, -9]), torch.tensor([0, 0]), fill=-1.0)
    assert torch.equal(out, torch.full_like(x, -1.0))


@settings(max_examples=40, deadline=None, database=None)
@given(
    n=st.integers(1, 5),
    h=st.integers(1, 8),
    w=st.integers(1, 8),
    max_shift=st.integers(0, 4),
    seed=st.integers(0, 2**31),
)
def test_content_is_preserved_except_at_the_borders(n, h, w, max_shift, seed):
    x = torch.rand(n, 2, h, w, generator=_gen(seed)) + 1.0  # no zeros in the image itself
    dy = torch.randint(-max_shift, max_shift + 1, (n,), generator=_gen(seed + 1))
    dx = torch.randint(-max_shift, max_shift + 1, (n,), generator=_gen(seed + 2))
    out = shift(x, dy, dx)
    for k in range(n):
        a, b = int(dy[k]), int(dx[k])
        # The overlap of the image with its shifted copy is equal; everything else is the fill.
        src = x[k, :, max(0, -a) : max(0, h - a), max(0, -b) : max(0, w - b)]
        dst = out[k, :, max(0, a) : max(0, h + a), max(0, b) : max(0, w + b)]
        assert torch.equal(src, dst)
        assert int((out[k] == 0).sum()) == out[k].numel() - dst.numel()


def test_random_shift_offsets_stay_within_max_shift_and_vary():
    x = _dot(n=500, c=1, h=9, w=9, at=(4, 4))
    out = random_shift(x, 2, generator=_gen(3))
    pos = out[:, 0].flatten(1).argmax(dim=1)
    rows, cols = pos // 9 - 4, pos % 9 - 4
    assert bool((out.flatten(1).sum(dim=1) == 1).all())  # the dot never leaves a 9x9 image with |shift|<=2
    assert set(rows.tolist()) == set(cols.tolist()) == {-2, -1, 0, 1, 2}


def test_random_shift_is_reproducible_with_a_seeded_generator():
    x = torch.randn(8, 1, 6, 6)
    assert torch.equal(random_shift(x, 2, generator=_gen(1)), random_shift(x, 2, generator=_gen(1)))
    assert not torch.equal(random_shift(x, 2, generator=_gen(1)), random_shift(x, 2, generator=_gen(2)))


def test_flip_mirrors_the_last_axis_and_twice_is_the_identity():
    x = torch.randn(5, 3, 4, 6)
    once = random_flip(x, p=1.0)
    assert torch.equal(once, x.flip(-1))
    assert torch.equal(random_flip(once, p=1.0), x)
    assert torch.equal(random_flip(x, p=0.0), x)
    # With the same seed the same examples flip, so flipping twice undoes it also for p = 0.5.
    assert torch.equal(random_flip(random_flip(x, generator=_gen(4)), generator=_gen(4)), x)


def test_flip_probability():
    x = torch.arange(4.0).expand(4000, 1, 1, 4)
    flipped = random_flip(x, p=0.3, generator=_gen(5))[:, 0, 0, 0] == 3.0
    # 5 standard errors of a binomial fraction with n = 4000, p = 0.3.
    assert abs(flipped.float().mean().item() - 0.3) < 5 * (0.3 * 0.7 / 4000) ** 0.5


def test_only_flippable_classes_flip():
    x = torch.arange(4.0).expand(600, 1, 1, 4)
    y = torch.arange(600) % 3
    out = random_flip(x, y, p=1.0, flippable=[0, 2])
    flipped = out[:, 0, 0, 0] == 3.0
    assert torch.equal(flipped, y != 1)
    with pytest.raises(TypeError, match=r"`y` must be a tensor of labels"):
        random_flip(x, p=1.0, flippable=[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.uint8])
def test_output_keeps_the_input_dtype_and_device(dtype):
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        x = (torch.rand(4, 1, 5, 5) * 200).to(dtype=dtype, device=device)
        y = torch.arange(4, device=device)
        for out in (random_shift(x, 1, generator=_gen()), random_flip(x, y, flippable=[1], generator=_gen())):
            assert out.dtype == dtype and out.device == x.device and out.shape == x.shape
        assert shift_and_flip(seed=1)(x, y).device == x.device


def test_augmented_yields_augmented_batches_and_clean_in_order():
    x = _dot(n=64, c=1, h=9, w=9, at=(4, 4))
    y = torch.arange(64) % 10
    loader = TensorBatches(x, y, 16, seed=0)
    aug = Augmented(loader, shift_and_flip(max_shift=2, p_flip=0.0, seed=0))
    assert len(aug) == len(loader) == 4
    batches = list(aug)
    assert len(batches) == 4
    images = torch.cat([bx for bx, _ in batches])[:, 0]
    # Every dot is still there, within 2 pixels of the center, and most have moved (P(no shift) = 1/25).
    assert torch.equal(images[:, 2:7, 2:7].flatten(1).sum(dim=1), torch.ones(64))
    assert (images[:, 4, 4] == 0).float().mean().item() > 0.8
    assert torch.equal(torch.cat([by for _, by in batches]).sort().values, y.sort().values)
    clean = list(aug.in_order())
    assert torch.equal(torch.cat([bx for bx, _ in clean]), x)
    assert torch.equal(torch.cat([by for _, by in clean]), y)
    plain = [(x, y)]
    assert Augmented(plain, lambda a, b: a).in_order() is plain  # no in_order(): the loader itself
    assert Augmented.shift_and_flip is shift_and_flip


def test_fit_measures_the_training_set_without_augmentation():
    torch.manual_seed(0)
    x, y = torch.randn(40, 1, 4, 4), torch.arange(40) % 3
    loader = TensorBatches(x, y, 8)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    # A deliberately destructive "augmentation": if fit evaluated through it, train_loss would be log(3).
    aug = Augmented(loader, lambda a, b: torch.zeros_like(a))
    history = fit(
        net, aug, torch.optim.SGD(net.parameters(), lr=0.1), epochs=2, eval_train=True, progress=False
    )
    clean = evaluate(net, loader.in_order())
    assert history["train_loss"][-1] == pytest.approx(clean["loss"], rel=1e-6)
    assert history["train_accuracy"][-1] == pytest.approx(clean["accuracy"])


def test_shift_and_flip_is_reproducible_and_respects_labels():
    x, y = torch.randn(32, 1, 6, 6), torch.arange(32) % 4
    a, b = shift_and_flip(seed=3), shift_and_flip(seed=3)
    assert torch.equal(a(x, y), b(x, y)) and torch.equal(a(x, y), b(x, y))  # same stream, step by step
    no_shift = shift_and_flip(max_shift=0, p_flip=1.0, flippable=[1], seed=0)(x, y)
    assert torch.equal(no_shift[y == 1], x[y == 1].flip(-1))
    assert torch.equal(no_shift[y != 1], x[y != 1])


X4 = torch.zeros(2, 1, 3, 3)


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (
            lambda: random_shift(X4, -1),
            ValueError,
            r"`max_shift` must be an integer >= 0. Received: max_shift=-1",
        ),
        (lambda: random_shift(X4, 1.5), TypeError, r"`max_shift`.*Received: max_shift=1.5"),
        (
            lambda: random_flip(X4, p=1.5),
            ValueError,
            r"`p` must be a real number in \[0, 1\]. Received: p=1.5",
        ),
        (
            lambda: random_shift(torch.zeros(3, 3)),
            ValueError,
            r"`x` must be a 4-D tensor.*Received: x with shape",
        ),
        (lambda: random_flip(torch.zeros(1, 3, 3)), ValueError, r"`x` must be a 4-D tensor"),
        (lambda: random_shift([[1]]), TypeError, r"`x` must be a torch.Tensor"),
        (
            lambda: shift(X4, torch.zeros(3), torch.zeros(2)),
            ValueError,
            r"`dy` must be an integer tensor of shape",
        ),
        (
            lambda: random_flip(X4, torch.zeros(3), flippable=[0]),
            ValueError,
            r"`y` must be a tensor of shape \(2,\)",
        ),
        (
            lambda: random_flip(X4, torch.zeros(2), flippable=3),
            TypeError,
            r"`flippable`.*Received: flippable=3",
        ),
        (lambda: random_shift(X4, generator=1), TypeError, r"`generator`.*Received: generator=1"),
        (lambda: Augmented([], "fn"), TypeError, r"`fn` must be a callable.*Received: fn='fn'"),
        (lambda: shift_and_flip(p_flip=-0.1), ValueError, r"`p_flip`.*Received: p_flip=-0.1"),
    ],
)
def test_bad_input_is_rejected(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_shift_and_flip_fills_the_border_with_the_given_background() -> None:
    background = -0.75  # exactly representable in float32
    x = torch.full((64, 1, 6, 6), background)
    x[:, :, 2:4, 2:4] = 1.0
    out = shift_and_flip(max_shift=1, p_flip=0.5, seed=0, fill=background)(
        x, torch.zeros(64, dtype=torch.long)
    )
    # Only the object moved: every pixel is either background or object, and the object is never cut.
    assert set(out.unique().tolist()) == {background, 1.0}
    assert (out == 1.0).sum(dim=(1, 2, 3)).eq(4).all()
