"""Monte Carlo dropout: keep dropout on at test time and average many stochastic predictions.

Each forward pass with a fresh dropout mask is a sample from an approximate posterior over networks; the
mean of the softmax outputs is the predictive distribution, and their spread over the passes is a cheap
measure of the model's uncertainty. Only the dropout layers are switched to training mode: batch norm must
keep using its running statistics (and must not update them), as at ordinary test time.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
from torch import nn

from dltricks._checks import check_int, check_type, fail
from dltricks.device import resolve_device
from dltricks.dropout import Dropout

# Every torch.nn dropout layer (Dropout, Dropout1d/2d/3d, AlphaDropout, FeatureAlphaDropout) and ours.
DROPOUT_TYPES: tuple[type[nn.Module], ...] = (nn.modules.dropout._DropoutNd, Dropout)


class MCPrediction(NamedTuple):
    """The result of :func:`mc_dropout_predict`; ``mean`` and ``std`` have shape ``(N, C)``, on the CPU."""

    mean: torch.Tensor
    """Mean over the passes of the softmax probabilities: the MC-dropout predictive distribution."""
    std: torch.Tensor
    """Standard deviation over the passes of each probability (population form: 0 for one pass)."""
    passes: int
    """Number of stochastic forward passes averaged."""


def mc_dropout_predict(
    model: nn.Module,
    x: torch.Tensor,
    *,
    passes: int = 30,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    generator_seed: int | None = None,
) -> MCPrediction:
    r"""Average ``passes`` softmax predictions of ``model`` on ``x`` with dropout active.

    .. math::

        \hat p(y \mid x) = \frac{1}{T} \sum_{t=1}^{T} \mathrm{softmax}\big(f(x; \hat W_t)\big),

    where :math:`\hat W_t` are the weights with the :math:`t`-th dropout mask applied. Dropout modules
    (subclasses of ``torch.nn.modules.dropout._DropoutNd`` and :class:`dltricks.dropout.Dropout`) run in
    training mode, every other module in evaluation mode, under ``torch.no_grad()``. Every module's
    training flag is restored afterwards, also when the forward pass raises.

    Args:
        model: a classifier returning logits of shape ``(batch, C)``; it must already be on ``device``.
        x: inputs; the first dimension indexes examples.
        passes: number of stochastic forward passes :math:`T` (>= 1).
        batch_size: examples per forward pass (>= 1); bounds the memory used.
        device: where the forward passes run; chunks of ``x`` are moved there.
        generator_seed: when given, the passes are reproducible: the global RNG is seeded with
            ``torch.manual_seed`` inside ``torch.random.fork_rng``, so the caller's random state (CPU, and
            the CUDA device used) is left as it was.

    Returns:
        An :class:`MCPrediction` with the mean and standard deviation of the probabilities, on the CPU.

    Raises:
        TypeError: if ``model`` is not a module or ``x`` not a tensor, or a count is not an integer.
        ValueError: if ``x`` holds no example, a count is below 1, or ``model`` has no dropout module:
            without one every pass gives the same prediction and a spread of exactly zero, which would
            read as certainty. Functional dropout (``F.dropout(x, p, self.training)``) cannot be switched
            on apart from the rest of the model, so it does not count: use ``nn.Dropout`` modules.

    References:
        Gal & Ghahramani, "Dropout as a Bayesian Approximation: Representing Model Uncertainty in Deep
        Learning", ICML 2016, sec. 4 (the predictive mean as the average of :math:`T` stochastic forward
        passes, "MC dropout").
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    check_type("x", x, torch.Tensor, "a torch.Tensor")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"`x` must hold at least one example. Received: x with shape {tuple(x.shape)}")
    passes = check_int("passes", passes, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if generator_seed is not None:
        generator_seed = check_int("generator_seed", generator_seed)
    dev = resolve_device(device)
    if not any(isinstance(m, DROPOUT_TYPES) for m in model.modules()):
        names = ", ".join(t.__name__ for t in (nn.Dropout, nn.Dropout2d, nn.AlphaDropout, Dropout))
        fail("model", f"a module containing dropout modules ({names}, ...)", type(model).__name__)

    flags = {m: m.training for m in model.modules()}
    rng: contextlib.AbstractContextManager = contextlib.nullcontext()
    if generator_seed is not None:
        cuda = (
            [dev.index if dev.index is not None else torch.cuda.current_device()]
            if dev.type == "cuda"
            else []
        )
        rng = torch.random.fork_rng(devices=cuda)
    try:
        with rng, torch.no_grad():
            if generator_seed is not None:
                torch.manual_seed(generator_seed)
            model.eval()
            for m in model.modules():
                if isinstance(m, DROPOUT_TYPES):
                    m.train()
            means, stds = [], []
            for start in range(0, x.shape[0], batch_size):
                chunk = x[start : start + batch_size].to(dev, non_blocking=True)
                probs = torch.stack([model(chunk).softmax(dim=1) for _ in range(passes)])
                # correction=0: the spread of the T samples themselves, so that one pass gives 0, not NaN.
                std, mean = torch.std_mean(probs, dim=0, correction=0)
                means.append(mean.cpu())
                stds.append(std.cpu())
    finally:
        for m, flag in flags.items():
            m.training = flag
    return MCPrediction(torch.cat(means), torch.cat(stds), passes)
