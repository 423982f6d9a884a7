"""Input preprocessing fitted on the training set only: standardization, min-max scaling, one-hot codes.

The rule this module is built around: **statistics come from the training split, and are then applied
unchanged to every other split.** A mean or a range computed over validation or test examples leaks them
into the model and makes the held-out score optimistic. So every scaler here has a ``fit`` that reads data
and a ``transform`` that only applies stored numbers (elementwise, no reduction over its input), and
:func:`standardize_splits` is the one-liner that gets the order right.

* :class:`Standardizer`: zero mean, unit variance, :math:`z = (x - \\mu) / \\sigma` (LeCun et al.,
  "Efficient BackProp", 1998, sec. 4.3: inputs with mean near zero and similar variances speed up gradient
  descent). Like ``sklearn.preprocessing.StandardScaler`` and ``keras.layers.Normalization``.
* :class:`RangeScaler`: fitted min-max scaling to ``[low, high]``, like ``sklearn``'s ``MinMaxScaler``;
  :func:`rescale` is its stateless form for a range known in advance (pixels 0..255 to [-1, 1], as
  ``keras.layers.Rescaling(1 / 127.5, offset=-1)``).
* :func:`one_hot` (validated ``torch.nn.functional.one_hot``) and :class:`OneHotEncoder` for categorical
  values of any hashable type, fitted on the training categories.

Which examples share a statistic is chosen by ``per``, for inputs of shape ``(N, ...)``:

* ``"feature"``: one statistic per position of an example, reduced over the examples (dim 0) only; the
  usual choice for tabular data. Keras ``Normalization(axis=-1)`` on 2-D data.
* ``"channel"``: one statistic per channel, reduced over every other dimension (examples and pixels);
  the usual choice for images. ``channel_dim=1`` for torch's ``(N, C, H, W)``, ``-1`` for ``(N, H, W, C)``.
* ``"global"``: a single statistic over all values.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from dltricks._checks import check_choice, check_float, check_int, check_type, fail

PER_CHOICES = ("feature", "channel", "global")


class NotFittedError(ValueError):
    """Raised when a scaler or encoder is used before ``fit`` (a ``ValueError``, as in scikit-learn)."""


def _not_fitted(obj: object, method: str) -> NotFittedError:
    name = type(obj).__name__
    return NotFittedError(
        f"`{name}.fit` must be called before `{method}`. Received: an unfitted {name}; fit it on the "
        "training split first"
    )


def _check_data(name: str, x: Any, per: str, channel_dim: int) -> torch.Tensor:
    check_type(name, x, torch.Tensor, "a torch.Tensor")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"`{name}` must hold at least one example along dim 0. Received: {name}.shape="
                         f"{tuple(x.shape)}")  # fmt: skip
    if x.dtype == torch.bool or x.is_complex():
        fail(f"{name}.dtype", "a real floating or integer dtype", x.dtype, TypeError)
    if per == "channel" and not -x.ndim <= channel_dim < x.ndim:
        fail("channel_dim", f"a dimension of `{name}` (which has {x.ndim})", channel_dim)
    if per == "channel" and channel_dim % x.ndim == 0:
        fail("channel_dim", "a dimension other than the examples' dim 0", channel_dim)
    return x


def _reduce_dims(ndim: int, per: str, channel_dim: int) -> tuple[int, ...]:
    """The dimensions a statistic is reduced over (the others each get their own statistic)."""
    if per == "feature":
        return (0,)
    if per == "channel":
        return tuple(d for d in range(ndim) if d != channel_dim % ndim)
    return tuple(range(ndim))


def _float_dtype(x: torch.Tensor) -> torch.dtype:
    # Integer inputs (uint8 pixels) are scaled into the default float dtype; float inputs keep theirs.
    return x.dtype if x.is_floating_point() else torch.get_default_dtype()


class _FittedScaler:
    """Shared ``per`` handling, shape checks and the unfitted state of the two scalers."""

    _stats: tuple[str, ...] = ()

    def __init__(self, per: str, channel_dim: int) -> None:
        self.per = check_choice("per", per, PER_CHOICES)
        self.channel_dim = check_int("channel_dim", channel_dim)
        self._shape: tuple[int, ...] | None = None  # the statistics' (keepdim) shape once fitted

    @property
    def fitted(self) -> bool:
        return self._shape is not None

    def _reduce(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Validate training data; return it detached in float64 with the dims to reduce over."""
        x = _check_data("x", x, self.per, self.channel_dim)
        dims = _reduce_dims(x.ndim, self.per, self.channel_dim)
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise ValueError(
                f"`x` must be finite to fit {type(self).__name__}. Received: x with {bad} NaN or inf values"
            )
        # float64 statistics: a float32 mean of 10^6 values loses digits that the transform would keep.
        return x.detach().to(torch.float64), dims

    def _check_fitted(self, x: Any, method: str, name: str = "x") -> torch.Tensor:
        if not self.fitted:
            raise _not_fitted(self, method)
        check_type(name, x, torch.Tensor, "a torch.Tensor")
        shape = self._shape
        assert shape is not None
        if self.per != "global":  # a global statistic is 0-d and fits any shape
            reduced = _reduce_dims(len(shape), self.per, self.channel_dim)
            if x.ndim != len(shape) or any(x.shape[d] != shape[d] for d in range(x.ndim) if d not in reduced):
                expected = ", ".join(
                    "N" if d == 0 else "*" if d in reduced else str(s) for d, s in enumerate(shape)
                )
                fail(f"{name}.shape", f"({expected}), as fitted with per={self.per!r}", tuple(x.shape))
        return x

    def _keep(self, stat: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """A statistic in the stored form: keepdim shape, or 0-d for ``per="global"``."""
        return (stat.reshape(()) if self.per == "global" else stat).to(dtype)

    def _state(self) -> dict[str, Any]:
        return {"per": self.per, "channel_dim": self.channel_dim}

    def _load(self, state: Mapping[str, Any], extra: tuple[str, ...]) -> None:
        keys = ("per", "channel_dim", *extra, *self._stats)
        if not isinstance(state, Mapping) or any(k not in state for k in keys):
            fail(
                "state",
                f"a mapping from {type(self).__name__}.state_dict() with keys {keys}",
                state,
                TypeError,
            )
        self.per = check_choice("state['per']", state["per"], PER_CHOICES)
        self.channel_dim = check_int("state['channel_dim']", state["channel_dim"])
        tensors = [state[k] for k in self._stats]
        for k, t in zip(self._stats, tensors):
            check_type(f"state[{k!r}]", t, torch.Tensor, "a torch.Tensor")
        if len({tuple(t.shape) for t in tensors}) != 1:
            fail(
                "state", "statistics of one shape", {k: tuple(t.shape) for k, t in zip(self._stats, tensors)}
            )
        for k, t in zip(self._stats, tensors):
            setattr(self, f"{k}_", t.detach().clone())
        self._shape = tuple(tensors[0].shape)


class Standardizer(_FittedScaler):
    r"""Standardize inputs with the training set's mean and (population) standard deviation.

    .. math::

        z = \frac{x - \mu}{s}, \qquad
        s = \begin{cases} \sigma & \text{if } \sigma > \varepsilon \text{ and the values vary} \\
                           1 & \text{otherwise,} \end{cases}

    with :math:`\mu, \sigma` over the dimensions chosen by ``per`` (see the module docstring),
    :math:`\sigma^2 = \frac{1}{n}\sum (x - \mu)^2` (``ddof=0``, as scikit-learn and Keras). A constant
    feature is centered but not divided, so it maps to exactly 0 on the training data instead of 0/0 = NaN;
    its mean is stored as the constant itself (the float mean of ``n`` equal values need not equal them).
    This is scikit-learn's ``StandardScaler`` rule (it replaces a zero scale by 1); Keras' ``Normalization``
    divides by :math:`\max(\sigma, 10^{-7})` instead, which agrees for every :math:`\sigma > 10^{-7}`.

    The statistics are computed in float64 and stored in the training data's float dtype (the default float
    dtype for integer data, e.g. ``uint8`` pixels); ``transform`` returns that dtype.

    Args:
        per: ``"feature"`` (default), ``"channel"`` or ``"global"``: which values share a statistic.
        eps: standard deviations at or below this are treated as zero (scale 1), >= 0.
        channel_dim: the channel dimension for ``per="channel"`` (1 for NCHW, -1 for NHWC).

    Attributes:
        mean_, std_, scale_: the fitted statistics, shaped to broadcast against the input (``None`` until
            :meth:`fit`); ``scale_`` is ``std_`` with the constant features' entries replaced by 1.

    Raises:
        TypeError: for an ``eps`` of the wrong type.
        ValueError: for an ``eps`` out of its allowed range.

    References:
        LeCun, Bottou, Orr & Müller, "Efficient BackProp", in *Neural Networks: Tricks of the Trade*, 1998,
        sec. 4.3 (normalizing the inputs).
    """

    _stats = ("mean", "std", "scale")

    def __init__(self, per: str = "feature", *, eps: float = 1e-8, channel_dim: int = 1) -> None:
        super().__init__(per, channel_dim)
        self.eps = check_float("eps", eps, minimum=0.0)
        self.mean_: torch.Tensor | None = None
        self.std_: torch.Tensor | None = None
        self.scale_: torch.Tensor | None = None

    def fit(self, x: torch.Tensor) -> Standardizer:
        """Compute the statistics of ``x`` (the training split only) and return ``self``."""
        x64, dims = self._reduce(x)
        mean = x64.mean(dim=dims, keepdim=True)
        std = (x64 - mean).square().mean(dim=dims, keepdim=True).sqrt()  # two-pass: no cancellation
        lo, hi = x64.amin(dim=dims, keepdim=True), x64.amax(dim=dims, keepdim=True)
        # Constancy is tested exactly (min == max), not by std alone: rounding leaves a tiny nonzero std
        # for a constant column of large values, and dividing by it would blow the rounding error up to ~1.
        constant = (lo == hi) | (std <= self.eps)
        dtype = _float_dtype(x)
        self.mean_ = self._keep(torch.where(lo == hi, lo, mean), dtype)
        self.std_ = self._keep(torch.where(lo == hi, torch.zeros_like(std), std), dtype)
        self.scale_ = self._keep(torch.where(constant, torch.ones_like(std), std), dtype)
        self._shape = tuple(self.mean_.shape)
        return self

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean_) / scale_``; elementwise, so nothing is learned from ``x``."""
        x = self._check_fitted(x, "transform")
        assert self.mean_ is not None and self.scale_ is not None
        mean, scale = self.mean_.to(x.device), self.scale_.to(x.device)
        return (x.to(mean.dtype) - mean) / scale

    def fit_transform(self, x: torch.Tensor) -> torch.Tensor:
        """``fit(x)`` then ``transform(x)``: for the training split only."""
        return self.fit(x).transform(x)

    def inverse_transform(self, z: torch.Tensor) -> torch.Tensor:
        """``z * scale_ + mean_``: back to the original units."""
        z = self._check_fitted(z, "inverse_transform", "z")
        assert self.mean_ is not None and self.scale_ is not None
        mean, scale = self.mean_.to(z.device), self.scale_.to(z.device)
        return z.to(mean.dtype) * scale + mean

    def state_dict(self) -> dict[str, Any]:
        """The configuration and the fitted statistics, for ``torch.save`` next to the model weights.

        Raises:
            NotFittedError: when called before ``fit``.
        """
        if not self.fitted:
            raise _not_fitted(self, "state_dict")
        return {**self._state(), "eps": self.eps, "mean": self.mean_, "std": self.std_, "scale": self.scale_}

    def load_state_dict(self, state: Mapping[str, Any]) -> Standardizer:
        """Restore a :meth:`state_dict` (configuration included); return ``self``.

        Raises:
            TypeError: for a ``state['eps']`` of the wrong type.
            ValueError: for a ``state['eps']`` out of its allowed range.
        """
        self._load(state, ("eps",))
        self.eps = check_float("state['eps']", state["eps"], minimum=0.0)
        return self


def standardize_splits(
    train: torch.Tensor, *others: torch.Tensor, per: str = "feature", eps: float = 1e-8, channel_dim: int = 1
) -> tuple[Any, ...]:
    """Fit a :class:`Standardizer` on ``train`` alone and apply it to ``train`` and every other split.

    Example::

        scaler, x_train, x_val, x_test = standardize_splits(x_train, x_val, x_test)

    Returns:
        ``(scaler, train_standardized, *others_standardized)``; keep ``scaler`` (its :meth:`state_dict`) to
        preprocess future inputs the same way.
    """
    scaler = Standardizer(per, eps=eps, channel_dim=channel_dim)
    z_train = scaler.fit_transform(train)
    return (scaler, z_train, *(scaler.transform(x) for x in others))


class RangeScaler(_FittedScaler):
    r"""Min-max scaling to ``[low, high]`` with the training set's minimum and maximum.

    .. math::

        y = \text{low} + (x - m)\,\frac{\text{high} - \text{low}}{M - m},

    with :math:`m, M` the training minimum and maximum over the dimensions chosen by ``per``. Training values
    land in ``[low, high]``; other splits may fall outside (a test value above the training maximum maps above
    ``high``): the transform is the same affine map, never re-fitted or clipped. A constant feature
    (:math:`M = m`) is given range 1, as in scikit-learn's ``MinMaxScaler``, so it maps to ``low``.

    Args:
        low, high: the target interval, ``low < high`` (default [-1, 1]).
        per: ``"global"`` (default: one range, the right choice for pixels), ``"feature"`` or ``"channel"``.
        channel_dim: the channel dimension for ``per="channel"``.

    Attributes:
        min_, max_: the fitted training minimum and maximum (``None`` until :meth:`fit`).
    """

    _stats = ("min", "max")

    def __init__(
        self, low: float = -1.0, high: float = 1.0, *, per: str = "global", channel_dim: int = 1
    ) -> None:
        super().__init__(per, channel_dim)
        self.low, self.high = _check_interval(low, high)
        self.min_: torch.Tensor | None = None
        self.max_: torch.Tensor | None = None

    def fit(self, x: torch.Tensor) -> RangeScaler:
        """Record the minimum and maximum of ``x`` (the training split only) and return ``self``."""
        x64, dims = self._reduce(x)
        dtype = _float_dtype(x)
        self.min_ = self._keep(x64.amin(dim=dims, keepdim=True), dtype)
        self.max_ = self._keep(x64.amax(dim=dims, keepdim=True), dtype)
        self._shape = tuple(self.min_.shape)
        return self

    def _scale(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.min_ is not None and self.max_ is not None
        lo, hi = self.min_.to(device), self.max_.to(device)
        span = hi - lo
        return lo, (self.high - self.low) / torch.where(span == 0, torch.ones_like(span), span)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """``low + (x - min_) * (high - low) / (max_ - min_)``; elementwise."""
        x = self._check_fitted(x, "transform")
        lo, scale = self._scale(x.device)
        return (x.to(lo.dtype) - lo) * scale + self.low

    def fit_transform(self, x: torch.Tensor) -> torch.Tensor:
        """``fit(x)`` then ``transform(x)``: for the training split only."""
        return self.fit(x).transform(x)

    def inverse_transform(self, y: torch.Tensor) -> torch.Tensor:
        """``min_ + (y - low) / scale``: back to the original units."""
        y = self._check_fitted(y, "inverse_transform", "y")
        lo, scale = self._scale(y.device)
        return (y.to(lo.dtype) - self.low) / scale + lo

    def state_dict(self) -> dict[str, Any]:
        """The configuration and the fitted range.

        Raises:
            NotFittedError: when called before ``fit``.
        """
        if not self.fitted:
            raise _not_fitted(self, "state_dict")
        return {**self._state(), "low": self.low, "high": self.high, "min": self.min_, "max": self.max_}

    def load_state_dict(self, state: Mapping[str, Any]) -> RangeScaler:
        """Restore a :meth:`state_dict` (configuration included); return ``self``."""
        self._load(state, ("low", "high"))
        self.low, self.high = _check_interval(state["low"], state["high"])
        return self


def _check_interval(low: Any, high: Any) -> tuple[float, float]:
    low = check_float("low", low)
    high = check_float("high", high)
    if not high > low:
        fail("high", f"greater than low={low!r}", high)
    return low, high


def rescale(
    x: torch.Tensor, *, in_min: float, in_max: float, low: float = -1.0, high: float = 1.0
) -> torch.Tensor:
    r"""Map the known input range ``[in_min, in_max]`` affinely onto ``[low, high]``; nothing is fitted.

    Computed as ``x * s + (low - in_min * s)`` with :math:`s = (\text{high}-\text{low})/(\text{in\_max} -
    \text{in\_min})`, the form of ``keras.layers.Rescaling(scale=s, offset=...)``: for 8-bit pixels
    ``rescale(x, in_min=0, in_max=255)`` is ``Rescaling(1 / 127.5, offset=-1)``. Integer inputs come out in
    the default float dtype, float inputs in their own.

    Use this when the range is a property of the data type (pixels, a sensor's spec), and :class:`RangeScaler`
    when it has to be estimated from the training set.

    Raises:
        TypeError: for an ``in_max``, ``in_min`` or ``x`` of the wrong type.
        ValueError: for an ``in_max`` or ``in_min`` out of its allowed range.
    """
    check_type("x", x, torch.Tensor, "a torch.Tensor")
    in_min = check_float("in_min", in_min)
    in_max = check_float("in_max", in_max)
    if not in_max > in_min:
        fail("in_max", f"greater than in_min={in_min!r}", in_max)
    low, high = _check_interval(low, high)
    s = (high - low) / (in_max - in_min)
    return x.to(_float_dtype(x)) * s + (low - in_min * s)


def one_hot(
    indices: Any, num_classes: int | None = None, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """One-hot rows for integer class indices, validated, as floats (ready for a loss or a matmul).

    ``torch.nn.functional.one_hot`` returns ``int64`` and reports a bad index with a bare runtime error;
    this version names the offending index and its position. Output shape: ``(*indices.shape, num_classes)``.

    Args:
        indices: integer class indices, a tensor or anything ``torch.as_tensor`` accepts (list, numpy).
        num_classes: number of classes (>= 1); ``None`` infers ``max(indices) + 1``.
        dtype: output dtype (default ``torch.float32``).

    Raises:
        ValueError: for a negative index or one >= ``num_classes``.
    """
    try:
        idx = indices if isinstance(indices, torch.Tensor) else torch.as_tensor(np.asarray(indices))
    except (TypeError, ValueError, RuntimeError):
        fail("indices", "integer class indices (a tensor, numpy array or list)", indices, TypeError)
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        fail("indices.dtype", "an integer dtype", idx.dtype, TypeError)
    check_type("dtype", dtype, torch.dtype, "a torch.dtype")
    if num_classes is None:
        if idx.numel() == 0:
            fail("num_classes", "given when `indices` is empty (it cannot be inferred)", num_classes)
        k = int(idx.max()) + 1 if int(idx.max()) >= 0 else 1
    else:
        k = check_int("num_classes", num_classes, minimum=1)
    bad = (idx < 0) | (idx >= k)
    if bool(bad.any()):
        pos = tuple(int(i) for i in bad.nonzero()[0])
        where = pos[0] if len(pos) == 1 else pos
        raise ValueError(f"`indices` must hold class indices in [0, {k - 1}] (num_classes={k}). Received: "
                         f"indices[{where}]={int(idx[pos])}")  # fmt: skip
    return torch.nn.functional.one_hot(idx.long(), k).to(dtype)


def _as_values(name: str, values: Any) -> list[Hashable]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray, torch.Tensor)):
        fail(
            name, "a sequence of category values (list, tuple, 1-D numpy array or tensor)", values, TypeError
        )
    if isinstance(values, (np.ndarray, torch.Tensor)):
        if values.ndim != 1:
            fail(f"{name}.shape", "one-dimensional", tuple(values.shape))
        values = values.tolist()  # numpy/tensor scalars become Python ones, which hash and compare by value
    out = list(values)
    for i, v in enumerate(out):
        if not isinstance(v, Hashable):
            fail(f"{name}[{i}]", "a hashable category value", v, TypeError)
    return out


class OneHotEncoder:
    """One-hot code categorical values (strings, integers, any hashable) with the training categories.

    ``fit`` records the sorted distinct training values as ``categories_`` (column ``j`` of the code is
    ``categories_[j]``), so the code does not depend on the order the examples arrive in. A value not seen
    in training has no column: ``handle_unknown="error"`` raises, ``"ignore"`` gives it an all-zero row
    (scikit-learn's options of the same names).

    Args:
        handle_unknown: ``"error"`` (default) or ``"ignore"``.
        dtype: dtype of the codes (default ``torch.float32``).

    Attributes:
        categories_: the sorted training categories (``None`` until :meth:`fit`).

    Raises:
        TypeError: for a ``dtype`` of the wrong type.
        ValueError: for a ``handle_unknown`` out of its allowed range.
    """

    def __init__(self, *, handle_unknown: str = "error", dtype: torch.dtype = torch.float32) -> None:
        self.handle_unknown = check_choice("handle_unknown", handle_unknown, ("error", "ignore"))
        self.dtype = check_type("dtype", dtype, torch.dtype, "a torch.dtype")
        self.categories_: list[Hashable] | None = None
        self._index: dict[Hashable, int] = {}

    def fit(self, values: Any) -> OneHotEncoder:
        """Record the distinct values of the training split; return ``self``.

        Raises:
            TypeError: for a ``values`` of the wrong type.
            ValueError: for a ``values`` out of its allowed range.
        """
        vals = _as_values("values", values)
        if not vals:
            fail("values", "a non-empty sequence", values)
        try:
            self.categories_ = sorted(set(vals))  # type: ignore[type-var]  # unorderable: TypeError below
        except TypeError:
            kinds = sorted({type(v).__name__ for v in vals})
            fail("values", "mutually comparable values (they are sorted)", f"types {kinds}", TypeError)
        assert self.categories_ is not None
        self._index = {c: j for j, c in enumerate(self.categories_)}
        return self

    def transform(self, values: Any) -> torch.Tensor:
        """The ``(len(values), len(categories_))`` one-hot codes of ``values``.

        Raises:
            ValueError: for a value not seen by ``fit`` (it is named).
            NotFittedError: when called before ``fit``.
        """
        if self.categories_ is None:
            raise _not_fitted(self, "transform")
        vals = _as_values("values", values)
        cols = []
        for i, v in enumerate(vals):
            j = self._index.get(v, -1)
            if j < 0 and self.handle_unknown == "error":
                fail(f"values[{i}]", f"a category seen in fit ({len(self._index)} known; or use "
                     "handle_unknown='ignore')", v)  # fmt: skip
            cols.append(j)
        col = torch.tensor(cols, dtype=torch.long)
        out = torch.zeros(len(vals), len(self.categories_), dtype=self.dtype)
        known = col >= 0
        out[known.nonzero().squeeze(1), col[known]] = 1
        return out

    def fit_transform(self, values: Any) -> torch.Tensor:
        """``fit(values)`` then ``transform(values)``: for the training split only."""
        return self.fit(values).transform(values)

    def inverse_transform(self, codes: torch.Tensor) -> list[Hashable | None]:
        """The category of each row's largest entry; ``None`` for an all-zero (unknown) row.

        Raises:
            TypeError: for a ``codes`` of the wrong type.
            ValueError: for a ``codes.shape`` out of its allowed range.
            NotFittedError: when called before ``fit``.
        """
        if self.categories_ is None:
            raise _not_fitted(self, "inverse_transform")
        check_type("codes", codes, torch.Tensor, "a torch.Tensor")
        if codes.ndim != 2 or codes.shape[1] != len(self.categories_):
            fail("codes.shape", f"(N, {len(self.categories_)})", tuple(codes.shape))
        best = codes.argmax(dim=1).tolist()
        empty = (codes == 0).all(dim=1).tolist()
        return [None if e else self.categories_[j] for j, e in zip(best, empty)]
