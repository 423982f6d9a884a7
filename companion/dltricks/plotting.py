"""One figure style for the whole book, and the mean ± std band every multi-seed plot uses."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib as mpl
import numpy as np
from cycler import cycler

# Color-blind-safe palette (Okabe & Ito, 2008), in the order series are drawn.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")

# The content column of the book's theme (sphinx-book-theme) at a normal window size, in CSS pixels, and the
# smallest text a figure may show at that width. A PNG wider than the column is shrunk to it, and its text
# with it: tests/test_figures.py checks every figure of the built book against these two numbers.
COLUMN_PX = 688
MIN_TEXT_PX = 11.0

STYLE = {
    # 6.4 x 3.6 in at 144 dpi: 922 px, shown at 688 (x 0.75), so 9-pt ticks read as 13.5 px; two panels
    # side by side fit in 7.5 in. Wider figures, or more panels per row, make the text too small.
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 144,
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
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 11,
    "lines.linewidth": 1.8,
}

# The smallest font size (points) any text of a figure may use: the ticks' and legends' size above. The
# chapters pass no smaller ``fontsize`` (tests/test_figures.py checks their sources).
MIN_FONT_PT = 9


def max_figure_px(dpi: float = STYLE["figure.dpi"], font_pt: float = MIN_FONT_PT) -> float:  # type: ignore[assignment]
    """The widest PNG (pixels at ``dpi``) whose ``font_pt`` text still reads as ``MIN_TEXT_PX`` once the
    figure is shrunk to the ``COLUMN_PX`` column.

    Raises:
        ValueError: for a ``dpi`` or ``font_pt`` that is not positive.
    """
    if not dpi > 0:
        raise ValueError(f"`dpi` must be positive. Received: dpi={dpi!r}")
    if not font_pt > 0:
        raise ValueError(f"`font_pt` must be positive. Received: font_pt={font_pt!r}")
    native_px = font_pt * dpi / 72
    return COLUMN_PX * native_px / MIN_TEXT_PX


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
