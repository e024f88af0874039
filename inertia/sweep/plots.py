"""Figures for sweep reports, as PNG bytes: metric-vs-parameter lines with CI bands, heat maps of
two-parameter grids, and thumbnail strips of videos. matplotlib's object API on the Agg canvas (no
pyplot, no global backend switch); PNGs carry no software/date metadata, so they are reproducible.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .stats import CellStat

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]


@dataclass
class Series:
    """One line of a parameter plot: conditions of one family that differ only in the parameter."""

    label: str
    points: list[tuple[float, str]]  # (parameter value, condition label), sorted by value


def _figure(panels: int, width_per: float = 4.0, height: float = 3.2, colorbars: bool = False):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(panels, 4)
    rows = math.ceil(panels / cols)
    figure = Figure(figsize=(width_per * cols, height * rows))
    FigureCanvasAgg(figure)
    # fixed margins: constrained layout doubles the drawing time and the panels are all alike
    top = 1 - 0.45 / (height * rows)
    right = 1 - (0.75 if colorbars else 0.15) / (width_per * cols)
    figure.subplots_adjust(left=0.7 / (width_per * cols), right=right, bottom=0.55 / (height * rows),
                           top=top, wspace=0.42 if colorbars else 0.3, hspace=0.45)
    axes = [figure.add_subplot(rows, cols, i + 1) for i in range(panels)]
    return figure, axes


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, metadata={"Software": None})
    return buffer.getvalue()


def _short(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parameter_plot(metric: str, parameter: str, backbones: Sequence[str], series: Sequence[Series],
                   cell, baseline: str | None) -> bytes:
    """Metric against one swept parameter, one panel per backbone; mean with a 95% CI band, baseline as a band."""
    figure, axes = _figure(len(backbones))
    for ax, backbone in zip(axes, backbones):
        ax.set_title(backbone, fontsize=10)
        base = cell(backbone, baseline, metric) if baseline else None
        if base is not None:
            ax.axhline(base.mean, color="#555555", linestyle="--", linewidth=1, label=f"baseline (n={base.n})")
            if not math.isnan(base.ci_low):
                ax.axhspan(base.ci_low, base.ci_high, color="#999999", alpha=0.18, linewidth=0)
        for index, line in enumerate(series):
            stats = [(x, cell(backbone, label, metric)) for x, label in line.points]
            stats = [(x, s) for x, s in stats if s is not None]
            if not stats:
                continue
            color = PALETTE[index % len(PALETTE)]
            xs = np.array([x for x, _ in stats])
            means = np.array([s.mean for _, s in stats])
            lows = np.array([s.ci_low for _, s in stats])
            highs = np.array([s.ci_high for _, s in stats])
            ns = sorted({s.n for _, s in stats})
            n_text = f"n={ns[0]}" if len(ns) == 1 else f"n={ns[0]}-{ns[-1]}"
            ax.plot(xs, means, marker="o", color=color, linewidth=1.6, markersize=4, label=f"{_short(line.label)} ({n_text})")
            finite = ~np.isnan(lows)
            if finite.any():
                ax.fill_between(xs[finite], lows[finite], highs[finite], color=color, alpha=0.2, linewidth=0)
        ax.set_xlabel(parameter)
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
    if axes:
        axes[0].legend(fontsize=7, loc="best", framealpha=0.8)
    figure.suptitle(f"{metric} vs {parameter}", fontsize=11)  # the caption says what the band is
    return _png(figure)


def heat_map(metric: str, family: str, x_param: str, y_param: str, x_values: Sequence[float], y_values: Sequence[float],
             cells: dict[tuple[float, float], str], backbones: Sequence[str], cell) -> bytes:
    """Mean of `metric` over a two-parameter grid, one panel per backbone; each cell shows mean and n."""
    from matplotlib import colormaps

    colormap = colormaps["viridis"].with_extremes(bad="#dddddd")
    figure, axes = _figure(len(backbones), width_per=4.2, height=3.4, colorbars=True)
    for ax, backbone in zip(axes, backbones):
        grid = np.full((len(y_values), len(x_values)), np.nan)
        counts = np.zeros_like(grid, dtype=int)
        for (x, y), label in cells.items():
            stat: CellStat | None = cell(backbone, label, metric)
            if stat is not None:
                i, j = list(y_values).index(y), list(x_values).index(x)
                grid[i, j], counts[i, j] = stat.mean, stat.n
        masked = np.ma.masked_invalid(grid)
        image = ax.imshow(masked, cmap=colormap, aspect="auto", origin="lower")
        finite = grid[~np.isnan(grid)]
        middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for i in range(len(y_values)):
            for j in range(len(x_values)):
                if np.isnan(grid[i, j]):
                    ax.text(j, i, "not run", ha="center", va="center", fontsize=7, color="#666666")
                else:
                    color = "white" if grid[i, j] < middle else "black"
                    ax.text(j, i, f"{grid[i, j]:.3g}\nn={counts[i, j]}", ha="center", va="center", fontsize=7, color=color)
        ax.set_xticks(range(len(x_values)), [f"{v:g}" for v in x_values], fontsize=8)
        ax.set_yticks(range(len(y_values)), [f"{v:g}" for v in y_values], fontsize=8)
        ax.set_xlabel(x_param)
        ax.set_ylabel(y_param)
        ax.set_title(backbone, fontsize=10)
        figure.colorbar(image, ax=ax, shrink=0.85)
    figure.suptitle(f"{metric}: {family} grid", fontsize=11)  # the caption says what a cell holds
    return _png(figure)


#: Frames smaller than this are shown enlarged by a whole factor (nearest neighbour), whatever the strip width.
MIN_TILE_HEIGHT = 64


def thumbnail_strip(video: Path, frames: int = 6, width: int = 330, max_height: int = 96) -> bytes:
    """`frames` evenly spaced frames of a video side by side (first and last included), as PNG, about
    `width` pixels wide (small videos are enlarged without smoothing)."""
    from PIL import Image

    from ..core.io import read_video

    video_frames, _ = read_video(video)
    picks = np.unique(np.linspace(0, len(video_frames) - 1, frames).round().astype(int))
    gap = 3
    first = video_frames[0]
    aspect = first.shape[1] / first.shape[0]
    height = int(np.clip(round((width - gap * (len(picks) - 1)) / len(picks) / aspect), 16, max_height))
    if first.shape[0] < MIN_TILE_HEIGHT:  # tiny frames (the test bed's 32x32) are enlarged, never shrunk further
        height = first.shape[0] * math.ceil(MIN_TILE_HEIGHT / first.shape[0])
    tiles = []
    for index in picks:
        tile = Image.fromarray(video_frames[index])
        scale = height / tile.height
        resample = Image.NEAREST if scale >= 1 else Image.LANCZOS
        tiles.append(tile.resize((max(1, round(tile.width * scale)), height), resample))
    strip = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1), height), (255, 255, 255))
    x = 0
    for tile in tiles:
        strip.paste(tile, (x, 0))
        x += tile.width + gap
    buffer = io.BytesIO()
    strip.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
