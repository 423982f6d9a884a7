"""One figure style for the whole book, and the mean ± std band every multi-seed plot uses."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib as mpl
import numpy as np
from cycler import cycler

# Colour-blind-safe palette (Okabe & Ito, 2008), in the order series are drawn.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")

STYLE = {
    "figure.figsize": (6.4, 3.8),
    "figure.dpi": 110,
    # An opaque white figure stays readable when the book is shown in dark mode.
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "axes.facecolor": "white",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": cycler(color=PALETTE),
    "legend.frameon": False,
    "font.size": 10,
    "axes.titlesize": 11,
    "lines.linewidth": 1.8,
}


def use_style() -> None:
    """Apply the book's matplotlib style to every later figure in this process."""
    mpl.rcParams.update(STYLE)  # type: ignore[arg-type]  # the stubs want literal keys


def band(ax, x: Sequence[float], runs: Sequence[Sequence[float]], label: str, color: str | None = None, **kw):
    """Plot the mean over ``runs`` (one row per seed) with a shaded ± one standard deviation band.

    Raises:
        ValueError: when ``runs`` is not 2-D (seeds x points).
    """
    arr = np.asarray(runs, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"`runs` must be 2-D (seeds x points). Received: runs with shape {arr.shape}")
    mean = arr.mean(axis=0)
    std = arr.std(axis=0, ddof=1) if arr.shape[0] > 1 else np.zeros_like(mean)
    (line,) = ax.plot(x, mean, label=f"{label} (n={arr.shape[0]})", color=color, **kw)
    ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    return line
