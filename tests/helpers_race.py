"""An analysis as a stored result reads, for races started without running one."""

from __future__ import annotations

from typing import Any

from core.analysis.record import AnalysisRecord


def analysis_of(
    *, advised: int = 2, shift: str = "input", size: str = "small", **changes: Any
) -> AnalysisRecord:
    """EfficientNet-Lite0's analysis of the faces sample: the cut scores 90% (88-92), the whole body
    70% (68-72); ``shift`` and ``size`` decide which fine-tunes race."""

    def stage(name: str, value: float) -> dict[str, Any]:
        return {"stage": name, "head_accuracy": {"value": value, "low": value - 0.02, "high": value + 0.02}}

    return AnalysisRecord.from_dict(
        {
            "dataset": {"name": "faces"},
            "sample": 200,
            "backbone": "efficientnet_lite0",
            "recommended_case": advised,
            "cut": "_blocks.4",
            "stage_scores": [stage("_blocks.4", 0.90), stage("whole body", 0.70)],
            "seconds": {"cut": 0.4},
            "shift_type": {"kind": shift},
            "size": {"size": size},
            **changes,
        }
    )
