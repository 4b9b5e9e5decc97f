"""Advice measured from the user's own images: how similar they are to ImageNet, which backbone
separates their classes best before any training, and where case 2 should cut.

No streamlit here: the analysis runs as a job (``core.jobs.analysis``) or from the command line.
"""

from __future__ import annotations

from core.analysis.analyse import Analysis, AnalysisError, AnalysisPlan, analyse, measured_advice

__all__ = ["Analysis", "AnalysisError", "AnalysisPlan", "analyse", "measured_advice"]
