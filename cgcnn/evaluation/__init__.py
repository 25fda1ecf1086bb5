"""Scoring: regression ``metrics``, ``bootstrap`` intervals, grouped ``folds`` and the
study's ``baselines``."""
