"""Drawing the dashboard with matplotlib: the dashboard's grid, titles, units and legends, Grafana's dark theme.

Why imitate Grafana's look at all: the README picture stands for the dashboard an operator imports;
it should be recognisable as that dashboard (same panel positions from ``gridPos``, same titles,
``legendFormat`` legends at the bottom, the panel's unit on the y axis) while the caption makes clear
that it was drawn by matplotlib from real scrapes, not screenshotted from Grafana.
"""

from __future__ import annotations

import datetime
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch
from matplotlib.ticker import FuncFormatter, MaxNLocator

# Grafana's dark theme and its classic palette (the default for time series).
PAGE = "#111217"
PANEL = "#181b1f"
BORDER = "#2c3038"
TEXT = "#ccccdc"
MUTED = "#8e8ea0"
GRID = "#262a31"
PALETTE = ("#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A6", "#705DA0",
           "#508642", "#CCA300", "#447EBC", "#C15C17")

UNIT_PX = 32  # one gridPos height unit (Grafana: 30 px; a little more here for README-width fonts)
WIDTH_PX = 1400
DPI = 100


@dataclass
class Line:
    """One drawn series: its legend text and one value (or ``None``) per timestamp."""

    legend: str
    values: list[float | None]


@dataclass
class Panel:
    """One dashboard panel, ready to draw."""

    title: str
    unit: str
    grid: dict[str, int]
    lines: list[Line]


def format_value(value: float, unit: str) -> str:
    """A y tick as Grafana writes it for the panel's unit (``s`` scales to ms/µs; rates get /s)."""
    if value == 0:
        return {"s": "0 s", "ops": "0 ops/s", "reqps": "0 req/s"}.get(unit, "0")
    if unit == "s":
        if abs(value) < 1e-3:
            return f"{value * 1e6:.3g} µs"
        if abs(value) < 1:
            return f"{value * 1e3:.3g} ms"
        return f"{value:.3g} s"
    suffix = {"ops": " ops/s", "reqps": " req/s"}.get(unit, "")
    if abs(value) >= 1000:
        return f"{value / 1000:.3g} K{suffix}"
    return f"{value:.3g}{suffix}"


def _times(epochs: Sequence[float]) -> list[datetime.datetime]:
    return [datetime.datetime.fromtimestamp(t, datetime.UTC) for t in epochs]


def _draw_panel(fig: plt.Figure, panel: Panel, times: list[datetime.datetime], origin_y: float,
                height_px: float, unit_w: float) -> None:
    """One panel: background box, title, plot area, legend rows under it."""
    margin = 4.0
    x0 = 8 + panel.grid["x"] * unit_w + margin
    y_top = origin_y + panel.grid["y"] * UNIT_PX + margin
    w = panel.grid["w"] * unit_w - 2 * margin
    h = panel.grid["h"] * UNIT_PX - 2 * margin

    def box(left: float, top: float, width: float, high: float) -> tuple[float, float, float, float]:
        return (left / WIDTH_PX, 1 - (top + high) / height_px, width / WIDTH_PX, high / height_px)

    frame = fig.add_axes(box(x0, y_top, w, h))
    frame.set_axis_off()
    frame.add_patch(FancyBboxPatch((0, 0), 1, 1, boxstyle="round,pad=0,rounding_size=0.01",
                                   transform=frame.transAxes, facecolor=PANEL, edgecolor=BORDER, linewidth=1))
    frame.text(10 / w, 1 - 15 / h, panel.title, transform=frame.transAxes, color=TEXT, fontsize=14,
               fontweight="normal", va="center", ha="left")

    ncol = min(6 if panel.grid["w"] >= 24 else 4, max(1, len(panel.lines)))
    rows = math.ceil(len(panel.lines) / ncol) if panel.lines else 0
    legend_px = rows * 21 + (6 if rows else 0)
    plot = fig.add_axes(box(x0 + 96, y_top + 38, w - 96 - 16, h - 38 - 28 - legend_px - 4))
    plot.set_facecolor(PANEL)
    for side in plot.spines.values():
        side.set_visible(False)
    plot.tick_params(colors=MUTED, labelsize=11.5, length=0, pad=5)
    plot.grid(True, color=GRID, linewidth=0.8)
    plot.set_axisbelow(True)
    plot.xaxis.set_major_locator(mdates.AutoDateLocator(tz=datetime.UTC, minticks=4,
                                                        maxticks=7 if panel.grid["w"] < 24 else 14))
    span = (times[-1] - times[0]).total_seconds()
    edge = mdates.date2num(times[0]), mdates.date2num(times[-1])

    def time_label(value: float, _: int) -> str:
        # A label hard against an edge would run into the y axis's lowest label or out of the panel.
        near = 40 / (w - 112) * span  # seconds within 40 px of an edge
        if (value - edge[0]) * 86400 < near or (edge[1] - value) * 86400 < near:
            return ""
        return mdates.num2date(value, tz=datetime.UTC).strftime("%H:%M:%S")

    plot.xaxis.set_major_formatter(FuncFormatter(time_label))
    plot.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 5, 10]))
    plot.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_value(v, panel.unit)))
    plot.set_xlim(times[0], times[-1])

    drawn = 0
    lowest = math.inf
    for number, line in enumerate(panel.lines):
        values = [math.nan if v is None else v for v in line.values]
        finite = [v for v in values if math.isfinite(v)]
        lowest = min([lowest, *finite])
        color = PALETTE[number % len(PALETTE)]
        plot.plot(times, values, color=color, linewidth=1.4, label=line.legend)
        drawn += bool(finite)
    if drawn == 0:
        plot.set_yticks([])
        plot.text(0.5, 0.5, "No data", transform=plot.transAxes, color=MUTED, fontsize=14, ha="center", va="center")
    elif lowest >= 0:
        top = plot.get_ylim()[1]
        plot.set_ylim(0, top if top > 0 else 1)
    if panel.lines:
        handles, labels = plot.get_legend_handles_labels()
        area = fig.add_axes(box(x0 + 10, y_top + h - legend_px - 4, w - 20, legend_px))
        area.set_axis_off()
        legend = area.legend(handles, labels, loc="upper left", ncol=ncol, frameon=False, fontsize=12,
                             labelcolor=TEXT, handlelength=1.2, columnspacing=1.8, borderaxespad=0, borderpad=0)
        for handle in legend.legend_handles:
            if handle is not None:
                handle.set_linewidth(4)


def draw(panels: list[Panel], epochs: Sequence[float], title: str, subtitle: str, caption: str,
         out: Path) -> None:
    """The whole picture: header, the panels on the dashboard's 24-column grid, the caption."""
    times = _times(epochs)
    header_px = 58
    grid_px = max(p.grid["y"] + p.grid["h"] for p in panels) * UNIT_PX
    wrapped = "\n".join(textwrap.fill(part, 165) for part in caption.split("\n"))
    caption_px = 30 + 21 * (wrapped.count("\n") + 1)
    height_px = header_px + grid_px + caption_px
    fig = plt.figure(figsize=(WIDTH_PX / DPI, height_px / DPI), dpi=DPI, facecolor=PAGE)
    unit_w = (WIDTH_PX - 16) / 24
    fig.text(16 / WIDTH_PX, 1 - 24 / height_px, title, color=TEXT, fontsize=18, fontweight="bold", va="center")
    fig.text(1 - 16 / WIDTH_PX, 1 - 24 / height_px, subtitle, color=MUTED, fontsize=12, va="center", ha="right")
    for panel in panels:
        _draw_panel(fig, panel, times, header_px - 8, height_px, unit_w)
    fig.text(16 / WIDTH_PX, (caption_px - 12) / height_px, wrapped, color=MUTED, fontsize=11, va="top",
             ha="left", linespacing=1.35)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, facecolor=PAGE, format="png")
    plt.close(fig)
