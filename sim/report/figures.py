"""matplotlib plumbing shared by every figure: the lazily imported Figure class, PNG data URIs and panel grids."""

from __future__ import annotations

import base64
import io
import math

from sim.report.errors import ReportError

DPI = 80


def _figure_class():
    """matplotlib's Figure, imported lazily (no pyplot: no global state, no display)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ReportError(f"reports need matplotlib: pip install 'glucotwin[sim]' ({exc})") from None
    return Figure


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _panel_grid(fig_class, n: int, ncols: int, width_in: float, height_in: float):
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = fig_class(figsize=(width_in * ncols, height_in * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]
