"""Which stage a run's heatmaps explain, read off the backbone's stage facts without torch.

Grad-CAM weighs a layer's feature maps by the class score's gradient, so the layer must be one
whose positions still map onto the image and whose every position can still move the score:

* convolutional families (and Swin and MaxViT, whose stages keep a grid): the last stage the
  model kept with a spatial map, the coarsest and most class-specific one (Selvaraju et al.);
* ViT: its tokens are laid back on the patch grid, class token dropped. Its head reads only the
  class token after the last encoder layer, so that layer's patch tokens get no gradient: the
  explained stage is the one before, whose patch tokens the last layer's attention mixes into
  the class token (the layer ``grad-cam``'s own ViT recipe hooks). In case 2 the head averages
  every token of the cut, so the cut itself is explained.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.models.catalog import BackboneCard, StageFact

METHOD = "Grad-CAM"


@dataclass(frozen=True)
class ExplainedLayer:
    """The stage a run's heatmaps come from, and how its output is laid out."""

    stage: StageFact
    layout: str  # the family's: nchw, nhwc (Swin) or tokens (ViT: a class token, then the patches)

    def label(self) -> str:
        """The layer in words: "Grad-CAM at layer4 (stage 4 of 4)"."""
        return f"{METHOD} at {self.stage.path} (stage {self.stage.index} of {self.stage.count})"


def explained_layer(card: BackboneCard, case: int, cut: str | None = None) -> ExplainedLayer:
    """The stage whose output explains a case-``case`` model of ``card`` (cut at ``cut``, or at
    the backbone's default cut, in case 2); ``ValueError`` when no stage can."""
    kept = _kept(card, case, cut)
    layout = card.family.layout
    if layout == "tokens":
        # The cut's tokens are all pooled into the head; otherwise only the class token is read.
        stage = kept[-1] if case == 2 or len(kept) == 1 else kept[-2]
        return ExplainedLayer(stage, layout)
    spatial = [fact for fact in kept if fact.side]
    if not spatial:
        raise ValueError(f"{card.name} keeps no stage with a spatial map to explain")
    return ExplainedLayer(spatial[-1], layout)


def _kept(card: BackboneCard, case: int, cut: str | None) -> tuple[StageFact, ...]:
    """The stages a case-``case`` model still runs: all of them, or those up to its cut."""
    if case != 2:
        return card.stage_facts
    cut = cut or card.default_cut
    paths = [fact.path for fact in card.stage_facts]
    if cut not in paths:
        raise ValueError(f"{card.name} has no stage {cut!r}; choose one of: {', '.join(paths)}")
    return card.stage_facts[: paths.index(cut) + 1]
