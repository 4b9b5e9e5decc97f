"""Plotly figures of a data-set analysis: pure functions of the analysis's JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from pages._charts import HIGHLIGHT

MUTED = "#8A9BB8"
DEPTHS = ("first quarter", "second quarter", "third quarter", "deepest quarter")


def _layout(fig: go.Figure, **kwargs: Any) -> go.Figure:
    fig.update_layout(margin={"l": 10, "r": 10, "t": 40, "b": 10}, height=320, plot_bgcolor="white", **kwargs)
    fig.update_xaxes(showgrid=False)
    fig.update_yaxes(gridcolor="#E5E9F0")
    return fig


def shift_by_depth(evidence: dict[str, Any]) -> go.Figure:
    """The BatchNorm shift per depth quarter, with the shift the score calls the boundary."""
    shifts = evidence["shift_by_depth"]
    midpoint = evidence["thresholds"]["midpoint_shift"]
    fig = go.Figure(
        go.Scatter(
            x=list(DEPTHS[: len(shifts)]), y=shifts, mode="lines+markers", line={"color": HIGHLIGHT},
            hovertemplate="%{x}: shift %{y:.3f}<extra></extra>", name="your images",
        )
    )  # fmt: skip
    fig.add_hline(
        y=midpoint, line={"dash": "dot", "color": MUTED}, annotation_text="boundary (deepest quarter)"
    )
    fig.update_yaxes(type="log", title="shift from ImageNet statistics")
    return _layout(fig, title="How far your images move the network, shallow to deep", showlegend=False)


def backbone_ranking(entries: Sequence[dict[str, Any]]) -> go.Figure:
    """k-NN accuracy (bars) and LogME (diamonds) per backbone, each with its interval."""
    names = [entry["name"] for entry in entries]
    knn, logme = [entry["knn"] for entry in entries], [entry["logme"] for entry in entries]
    fig = go.Figure()
    fig.add_bar(
        x=names, y=[s["value"] for s in knn], name="k-NN accuracy", marker_color=HIGHLIGHT, yaxis="y",
        error_y=_interval(knn),
        hovertemplate="%{x}: k-NN %{y:.1%}<extra></extra>",
    )  # fmt: skip
    fig.add_scatter(
        x=names, y=[s["value"] for s in logme], name="LogME", mode="markers", yaxis="y2",
        marker={"symbol": "diamond", "size": 12, "color": "#F2A93B"},
        error_y=_interval(logme),
        hovertemplate="%{x}: LogME %{y:.3f}<extra></extra>",
    )  # fmt: skip
    fig.update_layout(
        yaxis={"title": "k-NN accuracy", "tickformat": ".0%", "range": [0, 1.05]},
        yaxis2={"title": "LogME", "overlaying": "y", "side": "right", "showgrid": False},
        xaxis={"type": "category"},
        legend={"orientation": "h", "y": -0.2},
    )
    return _layout(fig, title="Backbones on your images, before any training")


def _interval(scores: Sequence[dict[str, float]]) -> dict[str, Any]:
    """Error bars from each score's interval (low, value, high)."""
    return {
        "type": "data",
        "symmetric": False,
        "array": [s["high"] - s["value"] for s in scores],
        "arrayminus": [s["value"] - s["low"] for s in scores],
    }


def stage_curve(stages: Sequence[dict[str, Any]], best: str) -> go.Figure:
    """Per-stage k-NN accuracy and LogME: where the features stop carrying your classes."""
    labels = [f"stage {stage['index']}" for stage in stages]
    details = [_stage_detail(stage) for stage in stages]
    fig = go.Figure()
    fig.add_scatter(
        x=labels, y=[s["knn"]["value"] for s in stages], name="k-NN accuracy", mode="lines+markers",
        line={"color": HIGHLIGHT}, customdata=details, hovertemplate="%{customdata}: k-NN %{y:.1%}<extra></extra>",
    )  # fmt: skip
    fig.add_scatter(
        x=labels, y=[s["logme"]["value"] for s in stages], name="LogME", mode="lines+markers", yaxis="y2",
        line={"color": "#F2A93B", "dash": "dot"}, customdata=details,
        hovertemplate="%{customdata}: LogME %{y:.3f}<extra></extra>",
    )  # fmt: skip
    chosen = next(i for i, stage in enumerate(stages) if stage["stage"] == best)
    fig.add_vline(x=chosen, line={"color": "#2E9E5B", "width": 2})
    fig.add_annotation(x=labels[chosen], y=1, yref="paper", yshift=14, text="suggested cut", showarrow=False)
    fig.update_layout(
        yaxis={"title": "k-NN accuracy", "tickformat": ".0%", "range": [0, 1.05]},
        yaxis2={"title": "LogME", "overlaying": "y", "side": "right", "showgrid": False},
        xaxis={"type": "category", "title": "shallow → deep"},
        legend={"orientation": "h", "y": -0.3},
    )
    return _layout(fig, title="Where to cut: each stage's features on your classes")


def race_chart(standing: dict[str, Any], recommended: int) -> go.Figure:
    """Each case's accuracy per seed (dots) and mean (bar); the recommended case outlined."""
    fig = go.Figure()
    cases = sorted(standing, key=int)
    fig.add_bar(
        x=[f"case {c}" for c in cases], y=[standing[c]["accuracy"] for c in cases], name="mean",
        marker={"color": [HIGHLIGHT if int(c) == recommended else MUTED for c in cases]},
        text=[f"{standing[c]['accuracy']:.1%} · {standing[c]['seconds']:.0f} s" for c in cases],
        textposition="outside",
    )  # fmt: skip
    for c in cases:
        seeds = standing[c]["accuracies"]
        fig.add_scatter(
            x=[f"case {c}"] * len(seeds), y=seeds, mode="markers", showlegend=False,
            marker={"color": "#1F2937", "size": 8}, hovertemplate="one seed: %{y:.1%}<extra></extra>",
        )  # fmt: skip
    fig.update_yaxes(title="accuracy", tickformat=".0%", range=[0, 1.1])
    fig.update_xaxes(type="category")
    return _layout(fig, title="The race (blue: the advised case)", showlegend=False)


def _stage_detail(stage: dict[str, Any]) -> str:
    grid = f" · {stage['side']}×{stage['side']}" if stage.get("side") else ""
    return f"stage {stage['index']} · {stage['channels']} channels{grid} · keeps {stage['params_kept']:.0%}"
