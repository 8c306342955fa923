"""Figures of a run: map overlays (paper Fig. 1/5), layer maps (Fig. 6), per-class bars (Fig. 8), B, pairwise
mIoU and threshold curves.

The plotting functions take plain arrays. With a ``path`` they save the figure (PNG unless the path's suffix or
``fmt`` says ``pdf`` or ``svg``) and return the saved path; with ``path=None`` they return the
:class:`matplotlib.figure.Figure`. They never touch pyplot's global state (no ``plt.figure``), so they are safe in
threads and in notebooks, and need no display.

:func:`repcam.reporting.run_figures.run_figures` builds all of them for a finished run directory (this module reads no run).

The functions live by family: :mod:`~repcam.reporting.map_figures` (map overlays, layer maps),
:mod:`~repcam.reporting.matrix_figures` (similarity and pairwise matrices), :mod:`~repcam.reporting.chart_figures`
(per-class bars, threshold curves); what they share (saving, label text) is :mod:`~repcam.reporting.figure_base`.
Import them from here.
"""

from __future__ import annotations

from repcam.reporting.chart_figures import per_class_bars, threshold_curves
from repcam.reporting.figure_base import FORMATS
from repcam.reporting.map_figures import IGNORE_INDEX, MAP_CMAP, layer_grid, overlay_grid
from repcam.reporting.matrix_figures import cluster_order, pairwise_heatmap, similarity_heatmap

__all__ = [
    "FORMATS",
    "IGNORE_INDEX",
    "MAP_CMAP",
    "cluster_order",
    "layer_grid",
    "overlay_grid",
    "pairwise_heatmap",
    "per_class_bars",
    "similarity_heatmap",
    "threshold_curves",
]
