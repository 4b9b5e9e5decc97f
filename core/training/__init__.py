"""A run from plan to result: the set-up, the epochs, the events it reports and the estimate.

This package's own ``__init__`` imports nothing, so that the torch-free parts (``plan``,
``events``, ``progress``) load without torch for the web server and the jobs layer.
"""
