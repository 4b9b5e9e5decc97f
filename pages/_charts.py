"""Plotly figures for the pages: pure functions of plain data, so they test without a server."""

from __future__ import annotations

import html
import math
import textwrap
from collections.abc import Sequence
from typing import Any

import plotly.colors
import plotly.graph_objects as go

from core.advice import cases
from core.models.families import FAMILIES

FATE_COLOURS = {
    "frozen": "#8A9BB8",
    "trained": "#2E9E5B",
    "removed": "#FFFFFF",
    "new": "#F2A93B",
}
FATE_LABELS = {
    "frozen": "kept, frozen",
    "trained": "kept, re-trained",
    "removed": "removed",
    "new": "new, random init",
}
HIGHLIGHT = "#2E6BE6"
LOG_TICKS = tuple(n * 10.0**e for e in range(-2, 4) for n in (1, 2, 5))  # 0.01, 0.02, 0.05 ... 5000
# One distinct colour per backbone family, assigned in the catalog's order of families.
FAMILY_ORDER = tuple(family.name for family in FAMILIES)
FAMILY_COLOURS = plotly.colors.qualitative.Dark24 + plotly.colors.qualitative.Light24
MIN_LOG, MAX_LOG = 1.0, 7.0
# A case's name is wrapped to lines this long: in a half-width column a cell holds about 22
# characters at the labels' size, and "fine-tuning or training from scratch" ran off its cell.
CELL_CHARACTERS = 21
LABEL_CLEARANCE = 0.8  # in decades on the size axis: a two-line label and the star, apart  # 10 to 10 million images on the matrix's size axis


def decision_matrix(num_images: int, similarity: str, chosen_case: int, dividing_line: int) -> go.Figure:
    """The 2x2 matrix: similarity across, data set size (log scale) up, the user as a star."""
    line = math.log10(dividing_line)
    cells = {
        ("small", "similar"): (0, 1, MIN_LOG, line),
        ("small", "different"): (1, 2, MIN_LOG, line),
        ("large", "similar"): (0, 1, line, MAX_LOG),
        ("large", "different"): (1, 2, line, MAX_LOG),
    }
    x = {"similar": 0.5, "different": 1.5, "unsure": 1.0}[similarity]
    y = min(max(math.log10(num_images), MIN_LOG + 0.3), MAX_LOG - 0.3)
    fig = go.Figure()
    for case in cases.CASES.values():
        x0, x1, y0, y1 = cells[(case.size, case.similarity)]
        chosen = case.number == chosen_case
        fig.add_shape(
            type="rect",
            x0=x0,
            x1=x1,
            y0=y0,
            y1=y1,
            fillcolor=HIGHLIGHT if chosen else "#EEF2F8",
            opacity=0.9 if chosen else 1.0,
            line={"color": "#FFFFFF", "width": 4},
            layer="below",
        )
        fig.add_annotation(
            x=(x0 + x1) / 2,
            y=_label_height(y0, y1, y if x0 < x < x1 else None),
            text="<br>".join([f"<b>Case {case.number}</b>", *textwrap.wrap(case.name, CELL_CHARACTERS)]),
            showarrow=False,
            font={"size": 15, "color": "#FFFFFF" if chosen else "#1B2333"},
        )
    fig.add_trace(
        go.Scatter(
            x=[x],
            y=[y],
            mode="markers+text",
            text=["you"],
            textposition="middle right",
            marker={
                "symbol": "star",
                "size": 22,
                "color": "#F2A93B",
                "line": {"color": "#1B2333", "width": 1.5},
            },
            textfont={"size": 14, "color": "#1B2333"},
            hovertemplate=f"{num_images:,} images, {similarity}<extra></extra>",
            showlegend=False,
        )
    )
    ticks = [t for t in range(int(MIN_LOG), int(MAX_LOG) + 1) if abs(t - line) > 0.2]
    fig.update_xaxes(
        range=[0, 2],
        tickvals=[0.5, 1.5],
        ticktext=["similar to ImageNet", "different from ImageNet"],
        showgrid=False,
        zeroline=False,
        fixedrange=True,
    )
    fig.update_yaxes(
        range=[MIN_LOG, MAX_LOG],
        tickvals=ticks + [line],
        ticktext=[f"{10**t:,}" for t in ticks] + [f"<b>{dividing_line:,}</b>"],
        title="images (log scale)",
        showgrid=False,
        zeroline=False,
        fixedrange=True,
    )
    fig.update_layout(height=380, margin={"l": 10, "r": 10, "t": 10, "b": 10}, plot_bgcolor="#FFFFFF")
    return fig


def _label_height(y0: float, y1: float, star: float | None) -> float:
    """A case label's height in its cell: the middle, unless the user's star is there; then
    the other half of the cell, so that the star never hides the label."""
    middle = (y0 + y1) / 2
    if star is None or abs(star - middle) >= LABEL_CLEARANCE:
        return middle
    return middle + (1 if star < middle else -1) * (y1 - y0) / 4 * 1.3


def network_diagram(layer_fates: dict[str, str], heights: Sequence[float] | None = None) -> go.Figure:
    """A network as boxes, each layer coloured by what the case does to it: the Advisor's demo
    network (3 conv + 3 FC layers), or a real backbone's stages (``heights`` then gives each
    box's height, and the last layer is the new one)."""
    names = list(layer_fates)
    fig = go.Figure()
    for i, name in enumerate(names):
        fate = layer_fates[name]
        conv = name.startswith("conv")
        height = heights[i] if heights is not None else (1.6 - 0.25 * i if conv else 0.7)
        fig.add_shape(
            type="rect",
            x0=i + 0.1,
            x1=i + 0.9,
            y0=-height / 2,
            y1=height / 2,
            fillcolor=FATE_COLOURS[fate],
            line={
                "color": "#D64545" if fate == "removed" else "#1B2333",
                "width": 2,
                "dash": "dash" if fate == "removed" else "solid",
            },
        )
        label = "new FC" if name == "new_fc" else name
        fig.add_annotation(
            x=i + 0.5,
            y=0,
            showarrow=False,
            text=f"<s>{label}</s>" if fate == "removed" else f"<b>{label}</b>",
            font={"color": "#D64545" if fate == "removed" else "#1B2333", "size": 13},
        )
        fig.add_annotation(x=i + 0.5, y=-1.0, text=FATE_LABELS[fate], showarrow=False, font={"size": 11})
    for fate, colour in FATE_COLOURS.items():  # legend entries
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=FATE_LABELS[fate],
                marker={
                    "symbol": "square",
                    "size": 14,
                    "color": colour,
                    "line": {"color": "#1B2333", "width": 1},
                },
            )
        )
    fig.update_xaxes(visible=False, range=[0, len(names)], fixedrange=True)
    fig.update_yaxes(visible=False, range=[-1.2, 1.0], fixedrange=True)
    fig.update_layout(
        height=230,
        margin={"l": 0, "r": 0, "t": 0, "b": 0},
        plot_bgcolor="#FFFFFF",
        legend={"orientation": "h", "y": 1.12, "x": 0},
    )
    return fig


def backbone_diagram(facts: Sequence[Any], cut: str) -> go.Figure:
    """Case 2 on a real backbone: its stages up to the cut kept and frozen, the rest removed,
    and the new layer; taller boxes have more channels. ``facts`` are its ``StageFact``s."""
    cut_index = next(f.index for f in facts if f.path == cut)
    fates = {
        f"stage {f.index}" if len(facts) <= 8 else str(f.index): "frozen"
        if f.index <= cut_index
        else "removed"
        for f in facts
    }
    widest = max(math.log2(f.channels) for f in facts)
    heights = [0.5 + 1.1 * math.log2(f.channels) / widest for f in facts]
    return network_diagram(fates | {"new_fc": "new"}, heights=[*heights, 0.7])


def accuracy_vs_cost(rows: Sequence[dict[str, Any]], chosen: str | None = None) -> go.Figure:
    """ImageNet top-1 against GFLOPs (log), one bubble per backbone, its area proportional to
    its parameters; a colour per family (in catalog order, so a family keeps its colour under
    any filter), and the ``chosen`` backbone ringed."""
    fig = go.Figure()
    for family in sorted({r["family"] for r in rows}):
        members = [r for r in rows if r["family"] == family and r["top1"] is not None and r["gflops"]]
        if not members:
            continue
        fig.add_trace(
            go.Scatter(
                x=[r["gflops"] for r in members],
                y=[r["top1"] for r in members],
                mode="markers",
                name=html.escape(family),
                marker={
                    "size": [bubble_size(r["params"]) for r in members],
                    "sizemode": "diameter",
                    "color": FAMILY_COLOURS[FAMILY_ORDER.index(family) % len(FAMILY_COLOURS)],
                    "opacity": 0.75,
                    "line": {"width": 1, "color": "#1B2333"},
                },
                customdata=[[r["name"], r["params"] / 1e6, r["input_size"], r["year"]] for r in members],
                hovertemplate="<b>%{customdata[0]}</b><br>top-1 %{y:.1f}%<br>%{x:.2f} GFLOPs<br>"
                "%{customdata[1]:.1f}M parameters<br>input %{customdata[2]} px · %{customdata[3]}<extra></extra>",
            )
        )
    picked = [r for r in rows if r["name"] == chosen and r["top1"] is not None and r["gflops"]]
    for r in picked:
        fig.add_trace(
            go.Scatter(
                x=[r["gflops"]],
                y=[r["top1"]],
                mode="markers+text",
                name=f"chosen: {r['name']}",
                text=[f"<b>{r['name']}</b>"],
                textposition="top center",
                cliponaxis=False,
                marker={
                    "size": bubble_size(r["params"]) + 10,
                    "color": "rgba(0,0,0,0)",
                    "line": {"width": 3, "color": HIGHLIGHT},
                },
                hoverinfo="skip",
            )
        )
    fig.update_xaxes(
        type="log",
        title="GFLOPs per image (log scale)",
        tickvals=LOG_TICKS,
        ticktext=[f"{t:g}" for t in LOG_TICKS],
    )
    fig.update_yaxes(title="ImageNet top-1 accuracy (%)")
    fig.update_layout(
        height=480,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"title": "family (bubble area: parameters)"},
    )
    return fig


def bubble_size(params: float) -> float:
    """A bubble's diameter for ``params`` parameters: its area grows with the parameter count."""
    return max(6.0, math.sqrt(params / 1e6) * 3)


def imagenet_history(rows: Sequence[dict[str, Any]]) -> go.Figure:
    """Top-5 error by model: the competition results beside torchvision's checkpoints."""
    fig = go.Figure()
    for checkpoint, source, colour in (
        (False, "ILSVRC competition result", HIGHLIGHT),
        (True, "torchvision checkpoint", "#8A9BB8"),
    ):
        members = [r for r in rows if r["checkpoint"] is checkpoint]
        fig.add_trace(
            go.Bar(
                x=[f"{r['model']}<br>{r['year']}" for r in members],
                y=[r["top5_error"] for r in members],
                name=source,
                marker_color=colour,
                text=[
                    f"{r['top5_error']:.2f}%" + (f" · {r['layers']} layers" if r["layers"] else "")
                    for r in members
                ],
                textposition="outside",
                hovertemplate="%{x}: %{y:.2f}% top-5 error<extra>" + source + "</extra>",
            )
        )
    fig.update_yaxes(title="ImageNet top-5 error (%)", rangemode="tozero")
    fig.update_layout(
        barmode="group",
        height=380,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "y": 1.1},
    )
    return fig


def confusion_heatmap(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> go.Figure:
    """Rows are true classes. Counts are written in the cells only while they stay legible."""
    n = len(labels)
    labels = [html.escape(label) for label in labels]  # plotly renders tags such as <a href> in text
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=labels,
            y=labels,
            colorscale="Blues",
            text=matrix if n <= 15 else None,
            texttemplate="%{text}" if n <= 15 else None,
            hovertemplate="true %{y}<br>predicted %{x}<br>%{z} images<extra></extra>",
            colorbar={"title": "images"},
        )
    )
    # Categorical axes: classes named 0-9 would otherwise become a numeric axis and lose labels.
    fig.update_xaxes(
        title="predicted", type="category", tickangle=-45 if n > 8 else 0, showticklabels=n <= 60
    )
    fig.update_yaxes(title="true", type="category", autorange="reversed", showticklabels=n <= 60)
    side = min(900, max(320, 18 * n + 160))
    fig.update_layout(height=side, margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return fig


def curves_by_run(histories: dict[str, Sequence[dict[str, Any]]]) -> go.Figure:
    """Validation accuracy per epoch, one line per run (named as people know the run)."""
    fig = go.Figure()
    for name, history in histories.items():
        fig.add_trace(
            go.Scatter(
                x=[h["epoch"] for h in history],
                y=[h["val_accuracy"] for h in history],
                mode="lines+markers",
                name=html.escape(name),
            )
        )
    longest = max((len(h) for h in histories.values()), default=1)
    fig.update_layout(
        height=320,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis=epoch_axis(longest),
        yaxis=accuracy_axis("validation accuracy"),
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def accuracy_axis(title: str = "accuracy") -> dict[str, Any]:
    """An accuracy axis as people read one: 0 to 100% in round steps, whatever the data."""
    return {
        "title": title,
        "range": [0, 1.02],
        "tickvals": [0, 0.25, 0.5, 0.75, 1],
        "tickformat": ".0%",
    }


def epoch_axis(epochs: int) -> dict[str, Any]:
    """Whole epochs only: a tick per epoch, or per a round number of them on long runs."""
    step = max(1, math.ceil(epochs / 10))
    return {"title": "epoch", "tickmode": "linear", "tick0": 1, "dtick": step, "tickformat": "d"}


def top_classes_chart(top: Sequence[tuple[str, float]]) -> go.Figure:
    """One image's most probable classes as bars, the likeliest on top."""
    labels = [html.escape(label) for label, _ in top][::-1]
    fig = go.Figure(
        go.Bar(
            x=[p for _, p in top][::-1],
            y=labels,
            orientation="h",
            text=[f"{p:.1%}" for _, p in top][::-1],
            textposition="outside",  # legible beside a short bar, never turned on its side
            cliponaxis=False,
        )
    )
    fig.update_layout(
        height=60 + 36 * len(top),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis={"range": [0, 1.12], "tickvals": [0, 0.25, 0.5, 0.75, 1], "tickformat": ".0%"},
        yaxis={"type": "category"},  # classes named 0-9 are names, not numbers
    )
    return fig


def counts_chart(counts: dict[str, dict[str, int]]) -> go.Figure:
    """Images per class, stacked by split."""
    fig = go.Figure()
    for split, per_class in counts.items():
        if any(per_class.values()):
            names = [html.escape(label) for label in per_class]  # plotly renders tags in labels
            fig.add_trace(go.Bar(x=names, y=list(per_class.values()), name=split))
    fig.update_layout(
        barmode="stack",
        height=260,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        yaxis_title="images",
        xaxis={"type": "category"},  # classes named 0-9 are names, not numbers
        legend={"orientation": "h", "y": 1.15},
    )
    return fig
