"""Extending the study is one place: a recipe defined here, registered with one line, is in the CV
table, ``metrics.json`` and ``report.md`` with no other edit (docs/extending.md)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from cgcnn.study import cross_validation, ds3, profiles, recipes, report
from cgcnn.study.recipes import Fitted, Prediction, Recipe, register
from cgcnn.study.rundir import run_paths

REPO = Path(__file__).resolve().parents[2]


class MedianGap(Recipe):
    """The median experimental gap of the training materials, whatever the material."""

    name, label = "median_gap", "median experimental gap of the training materials"

    def fit(self, materials, train, *, seed, split=None):
        value = float(np.median(materials.y[train]))
        return Fitted(lambda m, positions: Prediction(np.full(len(positions), value)), {"median": value})


def _runner():
    spec = importlib.util.spec_from_file_location("run_pipeline_for_extending", REPO / "scripts" / "run_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """The fixture study without the methods stage (the quickest run with a CV table, DS3 and a report)."""
    rp = _runner()
    out = tmp_path_factory.mktemp("runs")
    args = rp.parse_args(["--output", str(out), "--run-id", "ext", "--device", "cpu", "--set", "methods.candidates=[]"])
    lines: list[str] = []
    pipeline = rp.Pipeline(args, echo=lines.append)
    assert pipeline.run() == 0, "\n".join(lines)
    return pipeline.run_dir


@pytest.fixture
def registered_median():
    saved = dict(recipes._REGISTRY)
    register(MedianGap())  # the one registry line
    yield
    recipes._REGISTRY.clear()
    recipes._REGISTRY.update(saved)


def test_a_recipe_defined_here_is_in_the_cv_table_metrics_and_report(study_run, registered_median):
    profile = profiles.load_profile(study_run / "config.json")
    cross_validation.run_cross_validation(study_run, profile, echo=lambda _: None)
    cv = json.loads(run_paths(study_run)["cv"].read_text())
    assert "median_gap" in cv["cv_metrics"] and cv["cv_metrics"]["median_gap"]["n"] > 0

    ds3.evaluate_ds3(study_run, profile)
    metrics = json.loads(run_paths(study_run)["metrics"].read_text())
    row = metrics["models"]["median_gap"]
    assert row["label"] == MedianGap.label and np.isfinite(row["mae"])

    text = report.write_report(study_run, profile).read_text()
    assert MedianGap.label in text
