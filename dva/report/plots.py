"""The report's one figure: per-frame identity similarity of each edit to its source, as a PNG (matplotlib, Agg)."""

from __future__ import annotations

import io
from typing import Mapping

import numpy as np


def identity_plot(cosines: Mapping[str, np.ndarray], title: str, network: str) -> bytes:
    """PNG of source-vs-edit identity cosine over frames, one line per edit; NaN frames (no face) are gaps."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(6.4, 2.8), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for edit, values in cosines.items():
        values = np.asarray(values, dtype=float)
        ax.plot(np.arange(len(values)), values, marker="o", markersize=2.5, linewidth=1.2, label=edit)
    ax.set_xlabel("frame")
    ax.set_ylabel(f"cosine (source, edit)\n{network}")
    ax.set_title(title, fontsize=10)
    finite = np.concatenate([np.asarray(v, float) for v in cosines.values()] or [np.zeros(0)])
    finite = finite[np.isfinite(finite)]
    if finite.size:  # zoomed on the curves (edits differ in the second decimal), never above cosine 1
        ax.set_ylim(max(-1.0, finite.min() - 0.05), min(1.01, finite.max() + 0.05))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
