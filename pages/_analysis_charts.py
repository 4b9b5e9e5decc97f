"""Plotly figures of a data-set analysis: pure functions of the analysis's record."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from core.analysis.record import (
    CurveReading,
    Interval,
    RaceContender,
    RankedBackbone,
    SimilarityEvidence,
    StageReading,
)
from pages._charts import HIGHLIGHT

MUTED = "#8A9BB8"
DEPTHS = ("first quarter", "second quarter", "third quarter", "deepest quarter")


def _layout(fig: go.Figure, **kwargs: Any) -> go.Figure:
    fig.update_layout(margin={"l": 10, "r": 10, "t": 40, "b": 10}, height=320, plot_bgcolor="white", **kwargs)
    fig.update_xaxes(showgrid=False)
    fig.update_yaxes(gridcolor="#E5E9F0")
    return fig


def shift_by_depth(evidence: SimilarityEvidence) -> go.Figure:
    """The BatchNorm shift per depth quarter, with the shift the score calls the boundary."""
    shifts = list(evidence.shift_by_depth)
    midpoint = evidence.thresholds["midpoint_shift"]
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


def backbone_ranking(entries: Sequence[RankedBackbone]) -> go.Figure:
    """k-NN accuracy (bars) and LogME (diamonds) per backbone, each with its interval."""
    names = [entry.name for entry in entries]
    knn, logme = [entry.knn for entry in entries], [entry.logme for entry in entries]
    fig = go.Figure()
    fig.add_bar(
        x=names, y=[s.value for s in knn], name="k-NN accuracy", marker_color=HIGHLIGHT, yaxis="y",
        error_y=_interval(knn),
        hovertemplate="%{x}: k-NN %{y:.1%}<extra></extra>",
    )  # fmt: skip
    fig.add_scatter(
        x=names, y=[s.value for s in logme], name="LogME", mode="markers", yaxis="y2",
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


def _interval(scores: Sequence[Interval]) -> dict[str, Any]:
    """Error bars from each score's interval (low, value, high)."""
    return {
        "type": "data",
        "symmetric": False,
        "array": [s.high - s.value for s in scores],
        "arrayminus": [s.value - s.low for s in scores],
    }


def stage_curve(stages: Sequence[StageReading], planned: str) -> go.Figure:
    """Each frozen option's held-out accuracy with the new layer (with its interval) and k-NN's:
    the stages (case 2's cuts) and the whole body (case 1); ``planned`` is the option taken."""
    labels = [_option(stage) for stage in stages]
    details = [_stage_detail(stage) for stage in stages]
    heads = [stage.head_accuracy for stage in stages]
    fig = go.Figure()
    fig.add_scatter(
        x=labels, y=[h.value if h else None for h in heads], name="new layer, held out", mode="lines+markers",
        line={"color": HIGHLIGHT}, error_y=_interval([h or Interval() for h in heads]),
        customdata=details, hovertemplate="%{customdata}: new layer %{y:.1%}<extra></extra>",
    )  # fmt: skip
    fig.add_scatter(
        x=labels, y=[s.knn.value for s in stages], name="k-NN", mode="lines+markers",
        line={"color": "#F2A93B", "dash": "dot"}, customdata=details,
        hovertemplate="%{customdata}: k-NN %{y:.1%}<extra></extra>",
    )  # fmt: skip
    chosen = next(i for i, stage in enumerate(stages) if stage.stage == planned)
    fig.add_vline(x=chosen, line={"color": "#2E9E5B", "width": 2})
    fig.add_annotation(x=labels[chosen], y=1, yref="paper", yshift=14, text="the plan", showarrow=False)
    fig.update_layout(
        yaxis={"title": "accuracy", "tickformat": ".0%", "range": [0, 1.05]},
        xaxis={"type": "category", "title": "case 2 cuts, shallow → deep; then case 1"},
        # Inside the plot, low on the left, where scores rarely fall: below it, the legend
        # covered the axis's title under the slanted stage names.
        legend={
            "x": 0.01,
            "xanchor": "left",
            "y": 0.02,
            "yanchor": "bottom",
            "bgcolor": "rgba(255,255,255,0.8)",
        },
    )
    return _layout(fig, title="Each frozen option on your classes")


def learning_curve(curve: CurveReading) -> go.Figure:
    """The new layer's held-out accuracy on a quarter, a half and all of the sample."""
    heads = [p.head_accuracy for p in curve.points]
    fig = go.Figure(
        go.Scatter(
            x=[p.images for p in curve.points], y=[h.value for h in heads], mode="lines+markers",
            line={"color": HIGHLIGHT}, error_y=_interval(heads),
            hovertemplate="%{x} images: %{y:.1%}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_xaxes(type="log", title="images in the sample")
    fig.update_yaxes(title="new layer, held out", tickformat=".0%", range=[0, 1.05])
    shape = f"{curve.shape}: {curve.per_doubling:+.1%} per doubling"
    return _layout(fig, title=f"Learning curve ({shape})", showlegend=False)


def race_chart(contenders: Sequence[RaceContender]) -> go.Figure:
    """Each contender's accuracy with its spread and time; the advised plan in blue, a dropped
    fine-tune marked as such."""
    shown = [c for c in contenders if c.accuracy is not None]
    fig = go.Figure()
    fig.add_bar(
        x=[c.label for c in shown], y=[c.accuracy for c in shown], name="accuracy",
        marker={"color": [HIGHLIGHT if c.advised else MUTED for c in shown]},
        error_y={"type": "data", "array": [c.spread for c in shown], "visible": True},
        text=[_race_text(c) for c in shown], textposition="outside",
    )  # fmt: skip
    fig.update_yaxes(title="accuracy", tickformat=".0%", range=[0, 1.15])
    fig.update_xaxes(type="category")
    return _layout(fig, title="The race (blue: the advised plan)", showlegend=False)


def _race_text(contender: RaceContender) -> str:
    seconds = f" · {contender.seconds:.0f} s" if contender.seconds is not None else ""
    fate = contender.versus_advice or ""
    if contender.dropped_after is not None:
        fate = f"dropped after epoch {contender.dropped_after}"
    return f"{contender.accuracy:.1%}{seconds}" + (f" · {fate}" if fate and not contender.advised else "")


def _option(stage: StageReading) -> str:
    return "whole body" if stage.whole_body else f"stage {stage.index}"


def _stage_detail(stage: StageReading) -> str:
    if stage.whole_body:
        return "the whole body (case 1)"
    grid = f" · {stage.side}×{stage.side}" if stage.side else ""
    return f"stage {stage.index} · {stage.channels} channels{grid} · keeps {stage.params_kept:.0%}"
