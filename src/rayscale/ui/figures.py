"""A cluster's history as a plotly figure: nodes per group against demand, events on top.

Plotly draws everything (no chart code of ours in the page). The series are
step functions (``line_shape="hv"``) built from the store's step changes, so
the figure holds one point per change, not per round.

Every text that came from a user (group names, event messages) is HTML-escaped
before it goes in: plotly renders a subset of HTML in legends and hover
labels, and ``&lt;`` is shown as ``<``. plotly's own JSON encoder also writes
``<``, ``>`` and ``/`` as ``\\u003c``... inside the page's ``<script>``.
"""

from __future__ import annotations

import bisect
import html
import math
from datetime import datetime
from typing import Any

import plotly.io as pio

from rayscale.history.store import EventRow, Timeline

#: event kinds drawn as their own marker trace; the others share "other events"
MARKERS = {
    "launch": ("launches", "triangle-up", "#2ca02c"),
    "stop": ("stops", "triangle-down", "#d62728"),
}
OTHER = ("other events", "circle-open", "#7f7f7f")
#: a node's registration and its drain before a stop: in the table, not on the plot (one
#: each per node, they would crowd out the decisions)
UNMARKED = frozenset({"registered", "drain"})
PALETTE = ["#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#2ca02c", "#d62728", "#7f7f7f"]
DEMAND_KINDS = ("tasks", "gangs", "floor")


def _when(ts: float) -> str:
    """A time as plotly's date axis reads it (local time, milliseconds)."""
    return datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="milliseconds")


def _steps(points: list[tuple[float, int]], end: float) -> tuple[list[str], list[int]]:
    """The step series, carried on to ``end`` so the last value shows until then."""
    xs = [_when(t) for t, _ in points]
    ys = [n for _, n in points]
    if points and end > points[-1][0]:
        xs.append(_when(end))
        ys.append(ys[-1])
    return xs, ys


def _value_at(points: list[tuple[float, int]], times: list[float], ts: float) -> int:
    i = bisect.bisect_right(times, ts) - 1
    return points[i][1] if i >= 0 else 0


def demand_series(timeline: Timeline) -> list[tuple[float, int]]:
    """Pending demand of every kind added up (tasks, gang bundles, floor), at each change."""
    merged = sorted((t, k, n) for k in DEMAND_KINDS for t, n in timeline.demand.get(k, []))
    current = dict.fromkeys(DEMAND_KINDS, 0)
    out: list[tuple[float, int]] = []
    for i, (ts, kind, n) in enumerate(merged):
        current[kind] = n
        if i + 1 < len(merged) and merged[i + 1][0] == ts:
            continue  # the other kinds changed in the same round
        total = sum(current.values())
        if not out or out[-1][1] != total:
            out.append((ts, total))
    return out


def hover(event: EventRow) -> str:
    """The marker's hover text: what happened and why, every part escaped."""
    head = f"<b>{html.escape(event.kind)}</b>"
    if event.group:
        head += f" · {html.escape(event.group)}"
    lines = [head, html.escape(event.message)]
    why = [x for x in (event.reason and f"reason: {event.reason}", event.detail) if x]
    if why:
        lines.append(html.escape(" · ".join(why)))
    lines.append(_when(event.ts)[:19])
    return "<br>".join(lines)


Figure = dict[str, Any]  # plotly's figure JSON: {"data": [...traces], "layout": {...}}


def timeline_figure(timeline: Timeline, end: float) -> Figure:
    """Nodes per group (running solid, pending dotted) and demand (right axis), scaling
    events as markers on their group's line; ``end`` is when the picture stops (now, or
    when the cluster was shut down).

    The figure is plotly's JSON built directly (plotly.js validates it when it draws):
    building ``graph_objects`` would validate every point in Python, most of the
    page's time with a day of history.
    """
    traces: list[dict[str, Any]] = []
    running: dict[str, tuple[list[tuple[float, int]], list[float]]] = {}
    for i, group in enumerate(timeline.groups):
        color = PALETTE[i % len(PALETTE)]
        name = html.escape(group)
        for state, dash in (("running", "solid"), ("pending", "dot")):
            points = timeline.counts.get((group, state), [])
            if state == "running":
                running[group] = (points, [t for t, _ in points])
            if not points or (state == "pending" and not any(n for _, n in points)):
                continue
            xs, ys = _steps(points, end)
            traces.append({
                "type": "scatter", "x": xs, "y": ys, "mode": "lines",
                "name": f"{name} {state}", "legendgroup": name,
                "line": {"shape": "hv", "color": color, "dash": dash, "width": 2},
                "hovertemplate": f"{name} {state}: %{{y}}<extra></extra>",
            })
    demand = demand_series(timeline)
    if demand:
        xs, ys = _steps(demand, end)
        traces.append({
            "type": "scatter", "x": xs, "y": ys, "mode": "lines", "name": "pending demand",
            "yaxis": "y2", "line": {"shape": "hv", "color": "#444", "width": 1},
            "fill": "tozeroy", "fillcolor": "rgba(120,120,120,0.12)",
            "hovertemplate": "pending demand: %{y}<extra></extra>",
        })
    buckets: dict[tuple[str, str, str], list[EventRow]] = {}
    for event in timeline.events:
        if event.kind not in UNMARKED:
            buckets.setdefault(MARKERS.get(event.kind, OTHER), []).append(event)
    for style in [*MARKERS.values(), OTHER]:
        events = buckets.get(style, [])
        if not events:
            continue
        label, symbol, color = style
        ys = []
        for event in events:
            points, times = running.get(event.group or "", ([], []))
            ys.append(_value_at(points, times, event.ts))
        traces.append({
            "type": "scatter", "x": [_when(e.ts) for e in events], "y": ys, "mode": "markers",
            "name": label, "meta": label,
            "marker": {"symbol": symbol, "size": 11, "color": color,
                       "line": {"width": 1, "color": "#222"}},
            "hovertext": [hover(e) for e in events],
            "hovertemplate": "%{hovertext}<extra></extra>",
        })
    top_nodes = max((n for pts in timeline.counts.values() for _, n in pts), default=1)
    top_demand = max((n for _, n in demand), default=1)
    layout = {
        "height": 480, "margin": {"l": 50, "r": 60, "t": 30, "b": 40},
        "hovermode": "closest", "legend": {"orientation": "h", "y": -0.15},
        "plot_bgcolor": "white",
        "xaxis": {"title": {"text": "time"}, "type": "date", "gridcolor": "#eee"},
        "yaxis": {"title": {"text": "nodes"}, "gridcolor": "#eee", **_count_axis(top_nodes)},
        "yaxis2": {"title": {"text": "pending demand"}, "overlaying": "y", "side": "right",
                   "showgrid": False, **_count_axis(top_demand)},
    }
    return {"data": traces, "layout": layout}


def _count_axis(top: int) -> dict[str, Any]:
    """Whole numbers from 0 with headroom: counts have no fractional ticks."""
    top = max(top, 1)
    return {"range": [0, top * 1.08], "tick0": 0, "dtick": max(1, math.ceil(top / 6)),
            "tickformat": "d"}


def figure_html(fig: Figure, div_id: str = "timeline") -> str:
    """The figure's div and the script that draws it; plotly.min.js comes from /static."""
    return str(pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id,
                           validate=False,
                           config={"displaylogo": False, "responsive": True}))
