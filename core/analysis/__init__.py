"""Advice measured from the user's own images: how similar they are to ImageNet, which backbone
separates their classes best before any training, and where case 2 should cut.

No streamlit here: the analysis runs as a job (``core.jobs.analysis``) or from the command line
(``core.analysis.analyse``). This package's own ``__init__`` imports nothing, so that the
result's record (``core.analysis.record``) loads without torch for the web server.
"""
