"""Heatmaps: where a trained model looked, by Grad-CAM on its exported program.

``layer`` chooses, from a backbone's stage facts and the run's case, the stage whose output is
explained (torch-free: pages can say which layer a heatmap comes from); ``heatmap`` computes
Grad-CAM there with the ``grad-cam`` package and draws overlays.
"""
