"""Preprocessing fitted on the training split (dltricks.preprocess): standardization, min-max, one-hot codes.

Parity: scikit-learn's StandardScaler / MinMaxScaler / OneHotEncoder in float64 to 1e-12, Keras'
Normalization / Rescaling / to_categorical in float32 to 1e-5. The leakage tests show that fitting reads
the training split only.
"""

from __future__ import annotations

import importlib.util
import os
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltricks.preprocess import (
    NotFittedError,
    OneHotEncoder,
    RangeScaler,
    Standardizer,
    one_hot,
    rescale,
    standardize_splits,
)

HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None
HAS_TF = importlib.util.find_spec("tensorflow") is not None
needs_sklearn = pytest.mark.skipif(not HAS_SKLEARN, reason="scikit-learn is not installed")
keras_only = [
    pytest.mark.keras,
    pytest.mark.skipif(not HAS_TF, reason="TensorFlow is not installed"),
]


def _keras():
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras

    return keras


def _data(n=200, d=5, seed=0, dtype=torch.float64):
    """Features on different scales and offsets, with a constant column 3."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype) * torch.tensor([1.0, 10.0, 0.01, 1.0, 3.0], dtype=dtype)
    x = x + torch.tensor([0.0, -50.0, 7.0, 0.0, 1e3], dtype=dtype)
    x[:, 3] = 4.25
    return x


# --- Standardizer -------------------------------------------------------------------------------------


@needs_sklearn
def test_standardizer_matches_sklearn_standard_scaler():
    from sklearn.preprocessing import StandardScaler

    train, test = _data(seed=0), _data(n=50, seed=1)
    ours = Standardizer().fit(train)
    theirs = StandardScaler().fit(train.numpy())
    np.testing.assert_allclose(ours.mean_.squeeze(0).numpy(), theirs.mean_, rtol=1e-12, atol=1e-12)
    # scale_ is the std with the constant column's 0 replaced by 1: the same rule in both.
    np.testing.assert_allclose(ours.scale_.squeeze(0).numpy(), theirs.scale_, rtol=1e-12, atol=0)
    for x in (train, test):
        np.testing.assert_allclose(ours.transform(x).numpy(), theirs.transform(x.numpy()), rtol=0, atol=1e-12)
    z = torch.randn(4, 5, dtype=torch.float64)
    np.testing.assert_allclose(
        ours.inverse_transform(z).numpy(), theirs.inverse_transform(z.numpy()), rtol=1e-12, atol=1e-9
    )


@pytest.mark.parametrize(
    "case",
    [
        pytest.param("feature", marks=keras_only),
        pytest.param("channel", marks=keras_only),
        pytest.param("global", marks=keras_only),
    ],
)
def test_standardizer_matches_keras_normalization(case):
    keras = _keras()
    g = torch.Generator().manual_seed(3)
    if case == "feature":  # tabular (N, D); Keras keeps the last axis
        scale, offset = torch.tensor([1.0, 10.0, 0.5, 3.0]), torch.tensor([0.0, -5.0, 2.0, 1.0])
        train = torch.randn(200, 4, generator=g) * scale + offset
        test = torch.randn(30, 4, generator=g) * scale + offset
        ours, layer = Standardizer("feature"), keras.layers.Normalization(axis=-1)
    elif case == "channel":  # NHWC images, per-channel statistics: channel_dim=-1 <-> axis=-1
        train = torch.rand(64, 6, 6, 3, generator=g) * torch.tensor([255.0, 100.0, 1.0]) + 5
        test = torch.rand(8, 6, 6, 3, generator=g) * 300
        ours, layer = Standardizer("channel", channel_dim=-1), keras.layers.Normalization(axis=-1)
    else:
        train, test = torch.rand(64, 4, 4, generator=g) * 255, torch.rand(8, 4, 4, generator=g) * 255
        ours, layer = Standardizer("global"), keras.layers.Normalization(axis=None)
    ours.fit(train)
    layer.adapt(train.numpy())
    # Keras divides by max(sqrt(variance), 1e-7); with every std far above 1e-7 that is our formula. Keras
    # computes the statistics in float32, we in float64: 1e-5 holds while |mean| / std stays below ~10
    # (a column with mean 7 and std 0.01 already differs by 2e-4, Keras' float32 error, not ours).
    for x in (train, test):
        np.testing.assert_allclose(
            ours.transform(x).numpy(), np.asarray(layer(x.numpy())), rtol=1e-5, atol=1e-5
        )


def test_transformed_training_data_has_zero_mean_unit_std_and_constant_features_map_to_zero():
    x = _data()
    z = Standardizer().fit_transform(x)
    assert not bool(z.isnan().any())
    varying = [0, 1, 2, 4]
    torch.testing.assert_close(z[:, varying].mean(0), torch.zeros(4, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(z[:, varying].std(0, correction=0), torch.ones(4, dtype=torch.float64))
    assert bool((z[:, 3] == 0).all())


def test_constant_feature_is_detected_exactly_even_when_rounding_leaves_a_std():
    x = torch.full((7, 2), 3.3e9 + 0.7, dtype=torch.float64)
    x[:, 1] = torch.arange(7.0)
    # The naive formula is fooled: the float mean of 7 equal values is off by an ulp, so the computed std
    # is ~5e-7 (above eps) and (x - mean) / std turns that rounding error into +-1.
    naive = (x[:, 0] - x[:, 0].mean()) / x[:, 0].std(correction=0)
    assert bool((naive.abs() > 0.5).all())
    s = Standardizer().fit(x)
    z = s.transform(x)
    assert bool((z[:, 0] == 0).all()) and s.scale_[0, 0] == 1 and s.mean_[0, 0] == 3.3e9 + 0.7
    torch.testing.assert_close(s.inverse_transform(z), x, rtol=1e-15, atol=0)


def test_integer_inputs_are_standardized_into_the_default_float_dtype():
    pixels = torch.randint(
        0, 256, (16, 3, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    s = Standardizer("channel").fit(pixels)
    assert s.mean_.shape == (1, 3, 1, 1) and s.mean_.dtype == torch.float32
    z = s.transform(pixels)
    assert z.dtype == torch.float32
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(3), rtol=0, atol=1e-5)
    torch.testing.assert_close(s.inverse_transform(z), pixels.float(), rtol=0, atol=1e-4)


@settings(max_examples=40, deadline=None, database=None)
@given(
    per=st.sampled_from(["feature", "channel", "global"]),
    shape=st.tuples(st.integers(2, 9), st.integers(1, 4), st.integers(1, 3)),
    scale=st.floats(1e-3, 1e3),
    offset=st.floats(-1e3, 1e3),
    seed=st.integers(0, 2**31),
)
def test_standardizer_invariants(per, shape, scale, offset, seed):
    x = (
        torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
        + offset
    )
    s = Standardizer(per)
    z = s.fit_transform(x)
    dims = {"feature": (0,), "channel": (0, 2), "global": (0, 1, 2)}[per]
    varying = s.std_ > s.eps
    mean, std = z.mean(dim=dims, keepdim=True), z.std(dim=dims, keepdim=True, correction=0)
    if per == "global":
        mean, std = mean.reshape(()), std.reshape(())
    torch.testing.assert_close(mean, torch.zeros_like(mean), rtol=0, atol=1e-9)
    torch.testing.assert_close(std[varying], torch.ones_like(std[varying]), rtol=1e-9, atol=0)
    torch.testing.assert_close(s.inverse_transform(z), x, rtol=1e-9, atol=1e-9 * abs(offset))
    # The state round trip reproduces the transform bit for bit (on data it was not fitted on, too).
    other = torch.randn(3, *shape[1:], dtype=torch.float64)
    restored = Standardizer().load_state_dict(s.state_dict())
    assert restored.per == per and torch.equal(restored.transform(other), s.transform(other))


# --- fitting reads the training split only -------------------------------------------------------------

# Names of the torch functions that aggregate over a tensor: a statistic needs one of them.
REDUCTIONS = {"mean", "sum", "std", "var", "std_mean", "var_mean", "amin", "amax", "min", "max", "aminmax",
              "median", "quantile", "nanmean", "nansum", "norm", "vector_norm", "prod", "cumsum"}  # fmt: skip


class _Spy(torch.Tensor):
    """A tensor that logs, under each of its tags, every torch function applied to it; results carry the
    union of their arguments' tags, so whatever is computed from a spied tensor is spied on too."""

    logs: dict[str, list[str]] = {}

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tags = set().union(*(getattr(a, "tags", set()) for a in _leaves((args, kwargs))))
        for tag in tags:
            cls.logs.setdefault(tag, []).append(getattr(func, "__name__", repr(func)))
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        return _retag(out, tags)


def _leaves(obj):
    if isinstance(obj, (list, tuple)):
        return [leaf for o in obj for leaf in _leaves(o)]
    if isinstance(obj, dict):
        return _leaves(list(obj.values()))
    return [obj]


def _retag(out, tags):
    if isinstance(out, (list, tuple)):
        return type(out)(_retag(o, tags) for o in out)
    if isinstance(out, torch.Tensor) and tags:
        out = out.as_subclass(_Spy)
        out.tags = tags
    return out


def _spy(t, tag):
    """``t`` spied on under ``tag``; returns ``(tensor, log)``, the log filling as the tensor is used."""
    _Spy.logs[tag] = []
    return _retag(t, {tag}), _Spy.logs[tag]


def test_standardize_splits_fits_on_the_training_split_only():
    train, val, test = _data(seed=0), _data(n=40, seed=1) * 3 + 2, _data(n=40, seed=2) - 100
    train_spy, train_log = _spy(train.clone(), "train")
    val_spy, val_log = _spy(val.clone(), "val")
    test_spy, test_log = _spy(test.clone(), "test")
    scaler, z_train, z_val, z_test = standardize_splits(train_spy, val_spy, test_spy)
    assert REDUCTIONS & set(train_log), "the spy must see fit's reductions, or the next checks prove nothing"
    assert not REDUCTIONS & set(val_log) and not REDUCTIONS & set(test_log)
    assert {"sub", "div"} <= set(test_log)  # the other splits were only transformed, elementwise
    # The statistics are the training split's ...
    ref = Standardizer().fit(train)
    for key in ("mean", "std", "scale"):
        assert torch.equal(scaler.state_dict()[key], ref.state_dict()[key])
    # ... so the held-out splits are not centered on themselves.
    torch.testing.assert_close(z_test, (test - ref.mean_) / ref.scale_, rtol=0, atol=0)
    assert z_test.mean(0)[0].abs() > 10 and torch.equal(z_val, ref.transform(val))
    # Changing the held-out data changes nothing that was fitted.
    scaler2, z_train2, _ = standardize_splits(train, test * 1e3)
    assert torch.equal(z_train2, z_train) and torch.equal(scaler2.mean_, scaler.mean_)


# --- RangeScaler and rescale ----------------------------------------------------------------------------


@needs_sklearn
def test_range_scaler_matches_sklearn_min_max_scaler():
    from sklearn.preprocessing import MinMaxScaler

    train, test = _data(seed=0), _data(n=50, seed=1) * 1.5
    ours = RangeScaler(-1.0, 1.0, per="feature").fit(train)
    theirs = MinMaxScaler(feature_range=(-1, 1)).fit(train.numpy())
    for x in (train, test):  # the constant column maps to low = -1 in both (range 0 replaced by 1)
        np.testing.assert_allclose(ours.transform(x).numpy(), theirs.transform(x.numpy()), rtol=0, atol=1e-12)
    y = torch.rand(5, 5, dtype=torch.float64) * 2 - 1
    np.testing.assert_allclose(
        ours.inverse_transform(y).numpy(), theirs.inverse_transform(y.numpy()), rtol=1e-12, atol=1e-9
    )


@pytest.mark.parametrize("per", ["global", "feature", "channel"])
def test_range_scaler_maps_the_training_range_onto_low_high(per):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 3, 5, generator=g, dtype=torch.float64) * 40 - 7
    s = RangeScaler(0.0, 1.0, per=per)
    y = s.fit_transform(x)
    dims = {"global": (0, 1, 2), "feature": (0,), "channel": (0, 2)}[per]
    lo, hi = y.amin(dim=dims), y.amax(dim=dims)
    torch.testing.assert_close(lo, torch.zeros_like(lo), rtol=0, atol=1e-15)
    torch.testing.assert_close(hi, torch.ones_like(hi), rtol=0, atol=1e-15)
    torch.testing.assert_close(s.inverse_transform(y), x, rtol=1e-14, atol=1e-13)
    # A held-out value beyond the training range maps beyond [low, high]: no clipping, no refit.
    assert s.transform(x.amax() + torch.ones(1, 3, 5, dtype=torch.float64)).max() > 1
    restored = RangeScaler().load_state_dict(s.state_dict())
    assert torch.equal(restored.transform(x), y)


@pytest.mark.parametrize("keras_parity", [pytest.param(True, marks=keras_only), False])
def test_rescale_pixels_to_minus_one_one(keras_parity):
    pixels = torch.arange(256, dtype=torch.uint8).reshape(16, 16)
    y = rescale(pixels, in_min=0, in_max=255)
    assert y.dtype == torch.float32 and y[0, 0] == -1 and abs(float(y[-1, -1]) - 1) < 1e-6
    torch.testing.assert_close(y, pixels.double().div(127.5).sub(1).float(), rtol=0, atol=1e-6)
    # The known range and the fitted one agree when the training set spans it.
    torch.testing.assert_close(RangeScaler().fit_transform(pixels), y, rtol=0, atol=1e-6)
    if keras_parity:
        keras = _keras()
        theirs = keras.layers.Rescaling(1 / 127.5, offset=-1)(pixels.numpy().astype("float32"))
        # Same affine form x * s + offset and the same float32 scale: the results agree bit for bit.
        np.testing.assert_array_equal(y.numpy(), np.asarray(theirs))
    z = rescale(torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64), in_min=-1, in_max=1, low=0, high=10)
    assert z.dtype == torch.float64 and z.tolist() == [0.0, 5.0, 10.0]


# --- one-hot ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keras_parity", [pytest.param(True, marks=keras_only), False])
def test_one_hot_matches_torch_and_keras(keras_parity):
    idx = torch.tensor([3, 0, 2, 2, 1, 0])
    ours = one_hot(idx, 5)
    assert ours.dtype == torch.float32 and ours.shape == (6, 5)
    assert torch.equal(ours, torch.nn.functional.one_hot(idx, 5).float())
    assert torch.equal(one_hot(idx), torch.nn.functional.one_hot(idx).float())  # inferred: 4 classes
    assert torch.equal(
        one_hot([[1, 0], [2, 1]], 3, dtype=torch.float64).argmax(-1), torch.tensor([[1, 0], [2, 1]])
    )
    if keras_parity:
        keras = _keras()
        np.testing.assert_array_equal(ours.numpy(), keras.utils.to_categorical(idx.numpy(), 5))
        np.testing.assert_array_equal(one_hot(idx).numpy(), keras.utils.to_categorical(idx.numpy()))


@pytest.mark.parametrize(
    ("indices", "num_classes", "error", "received"),
    [
        (torch.tensor([0, 4, 1]), 3, ValueError, "indices[1]=4"),
        (torch.tensor([0, 1, -1]), 3, ValueError, "indices[2]=-1"),
        (torch.tensor([[0, 1], [-2, 0]]), None, ValueError, "indices[(1, 0)]=-2"),
        (torch.tensor([0, 1]), 0, ValueError, "num_classes=0"),
        (torch.tensor([0.0, 1.0]), 2, TypeError, "indices.dtype=torch.float32"),
        (torch.tensor([], dtype=torch.long), None, ValueError, "num_classes=None"),
        (["a"], 2, TypeError, "indices=['a']"),
    ],
)
def test_one_hot_rejects_bad_indices(indices, num_classes, error, received):
    with pytest.raises(error, match=re.escape(f"Received: {received}")):
        one_hot(indices, num_classes)


WEEK = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def test_one_hot_encoder_on_weekday_names():
    train = ["Wed", "Mon", "Wed", "Sun", "Fri", "Mon"]
    enc = OneHotEncoder().fit(train)
    assert enc.categories_ == ["Fri", "Mon", "Sun", "Wed"]  # sorted, whatever the order of arrival
    codes = enc.transform(["Mon", "Fri", "Wed"])
    assert codes.dtype == torch.float32
    assert codes.tolist() == [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]]
    assert enc.inverse_transform(codes) == ["Mon", "Fri", "Wed"]
    with pytest.raises(ValueError, match=re.escape("Received: values[1]='Tue'")):
        enc.transform(["Mon", "Tue"])
    ignore = OneHotEncoder(handle_unknown="ignore").fit(train)
    codes = ignore.transform(np.array(["Tue", "Sun"]))
    assert codes.tolist() == [[0, 0, 0, 0], [0, 0, 1, 0]] and ignore.inverse_transform(codes) == [None, "Sun"]
    ints = OneHotEncoder().fit(torch.tensor([10, 3, 3, 7]))
    assert ints.categories_ == [3, 7, 10] and ints.transform(np.array([7])).tolist() == [[0, 1, 0]]


@needs_sklearn
@pytest.mark.parametrize("handle_unknown", ["error", "ignore"])
def test_one_hot_encoder_matches_sklearn(handle_unknown):
    from sklearn.preprocessing import OneHotEncoder as SkOneHotEncoder

    rng = np.random.default_rng(0)
    train = list(rng.choice(WEEK[:5], 40))
    test = list(rng.choice(WEEK if handle_unknown == "ignore" else WEEK[:5], 30))
    ours = OneHotEncoder(handle_unknown=handle_unknown).fit(train)
    theirs = SkOneHotEncoder(sparse_output=False, handle_unknown=handle_unknown).fit(np.array(train)[:, None])
    assert ours.categories_ == theirs.categories_[0].tolist()
    np.testing.assert_array_equal(ours.transform(test).numpy(), theirs.transform(np.array(test)[:, None]))


# --- bad input ----------------------------------------------------------------------------------------


def test_using_a_scaler_before_fit_is_an_error():
    for obj, call in [
        (Standardizer(), lambda s: s.transform(torch.ones(2, 2))),
        (Standardizer(), lambda s: s.inverse_transform(torch.ones(2, 2))),
        (Standardizer(), lambda s: s.state_dict()),
        (RangeScaler(), lambda s: s.transform(torch.ones(2, 2))),
        (OneHotEncoder(), lambda s: s.transform(["a"])),
    ]:
        with pytest.raises(NotFittedError, match=rf"`{type(obj).__name__}\.fit` must be called before"):
            call(obj)
    assert issubclass(NotFittedError, ValueError)


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda: Standardizer("pixel"), ValueError, r"`per` must be one of .*Received: per='pixel'"),
        (lambda: Standardizer(eps=-1.0), ValueError, r"`eps`.*Received: eps=-1.0"),
        (lambda: Standardizer().fit([[1.0, 2.0]]), TypeError, r"`x` must be a torch.Tensor"),
        (lambda: Standardizer().fit(torch.ones(0, 3)), ValueError, r"Received: x.shape=\(0, 3\)"),
        (lambda: Standardizer().fit(torch.tensor([[1.0, float("nan")]])), ValueError, r"1 NaN or inf"),
        (lambda: Standardizer("channel").fit(torch.ones(5)), ValueError, r"Received: channel_dim=1"),
        (lambda: Standardizer("channel", channel_dim=-4).fit(torch.ones(2, 3, 4, 5)), ValueError,
         r"other than the examples' dim 0. Received: channel_dim=-4"),
        (lambda: Standardizer().fit(torch.ones(4, 3)).transform(torch.ones(4, 2)), ValueError,
         re.escape("`x.shape` must be (N, 3), as fitted with per='feature'. Received: x.shape=(4, 2)")),
        (lambda: Standardizer("channel").fit(torch.ones(4, 3, 2, 2)).transform(torch.ones(4, 2, 2, 2)),
         ValueError, re.escape("must be (N, 3, *, *)")),
        (lambda: Standardizer().load_state_dict({"per": "feature"}), TypeError, r"`state` must be a mapping"),
        (lambda: RangeScaler(1.0, 1.0), ValueError, r"`high` must be greater than low=1.0. Received: high=1"),
        (lambda: RangeScaler(per="row"), ValueError, r"Received: per='row'"),
        (lambda: rescale(torch.ones(2), in_min=5, in_max=5), ValueError, r"Received: in_max=5"),
        (lambda: rescale(torch.ones(2), in_min=0, in_max="255"), TypeError, r"Received: in_max='255'"),
        (lambda: OneHotEncoder(handle_unknown="zero"), ValueError, r"Received: handle_unknown='zero'"),
        (lambda: OneHotEncoder().fit("Monday"), TypeError, r"Received: values='Monday'"),
        (lambda: OneHotEncoder().fit([]), ValueError, r"`values` must be a non-empty sequence"),
        (lambda: OneHotEncoder().fit([[1], [2]]), TypeError, r"Received: values\[0\]=\[1\]"),
        (lambda: OneHotEncoder().fit(["a", 1]), TypeError, r"mutually comparable.*'int', 'str'"),
        (lambda: OneHotEncoder().fit(["a"]).inverse_transform(torch.ones(2, 3)), ValueError,
         re.escape("Received: codes.shape=(2, 3)")),
    ],
)  # fmt: skip
def test_bad_input_is_rejected(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
