"""Scoring: regression ``metrics``, ``bootstrap`` intervals, grouped ``folds``, the
study's ``baselines``, and ``scoring`` (what ``cgcnn evaluate`` reports)."""
