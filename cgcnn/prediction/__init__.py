"""Prediction: ``inference`` (predict, embed, device), ``predictor`` (``load_model``),
``ensemble`` (members, calibrated spread), ``trees`` (the boosted-tree member),
``streaming`` (constant-memory screening, shards) and ``shipped`` (packaged models)."""
