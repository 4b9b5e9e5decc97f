"""The backbones: families described once as data, each name resolved once into a ``Backbone``
record (catalog facts, stages, weights source), and the surgery that adapts one to a case."""
