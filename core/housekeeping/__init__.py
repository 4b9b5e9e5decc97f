"""Housekeeping of a shared instance: what is deleted when (retention), so the disk does not only grow.

It walks the runs and data sets the jobs layer writes, so it sits above it.
"""
