"""cgcnn.study.engine and cgcnn.study.recipes: one fold loop for every recipe, and the baselines as recipes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cgcnn.evaluation.folds import fold_inner_split, grouped_folds
from cgcnn.study.engine import cross_validate, fit_final
from cgcnn.study.recipes import Fitted, LinearPBE, Materials, Prediction, RawPBE, Recipe, baselines, registered

FORMULAS = ["NaCl", "KCl", "LiF", "MgO", "GaAs", "Si", "CsCl", "NaF", "KBr", "LiCl", "CaO", "ZnS"]


def materials(pbe=None) -> Materials:
    n = len(FORMULAS)
    pbe = np.linspace(0.5, 6.0, n) if pbe is None else np.asarray(pbe, float)
    frame = pd.DataFrame(
        {
            "material_id": [f"m{k}" for k in range(n)],
            "formula": FORMULAS,
            "group": FORMULAS,
            "bg_exp": 1.5 * pbe + 0.5,
            "bg_pbe": pbe,
        }
    )
    return Materials(frame)


class Spy(Recipe):
    """Predicts the mean label of its training materials, and remembers what each fit saw."""

    name, label = "spy", "mean of the training labels"

    def __init__(self):
        self.seen = []

    def fit(self, m, train, *, seed, split=None):
        self.seen.append((set(train), split, seed))
        value = float(m.y[train].mean())
        return Fitted(lambda mm, pos: Prediction(np.full(len(pos), value)), {"value": value})


def test_every_material_is_predicted_once_per_repeat_by_a_model_that_never_saw_it():
    m = materials()
    folds = grouped_folds(m.groups, m.y, k=3, repeats=2, seed=1)
    spy = Spy()
    result = cross_validate(spy, m, folds)
    assert len(result.predictions) == 2 * len(m)
    assert result.predictions.groupby("repeat")["material_id"].nunique().tolist() == [len(m), len(m)]
    assert (result.predictions["model"] == "spy").all() and len(result.infos) == len(folds)
    for fold, (train, split, seed) in zip(folds, spy.seen):
        assert train == set(fold.train) and not train & set(fold.test) and seed == fold.seed
        # the one inner split: the same for every recipe on this fold
        fit, val = split
        assert np.array_equal(fit, fold_inner_split(m.groups, fold, 0.15)[0]) and set(fit) | set(val) == train


def test_a_recipe_returning_the_wrong_shape_is_named():
    class Broken(Spy):
        name = "broken"

        def fit(self, m, train, *, seed, split=None):
            return Fitted(lambda mm, pos: Prediction(np.zeros(1)))

    m = materials()
    with pytest.raises(ValueError, match="recipe 'broken' returned"):
        cross_validate(Broken(), m, grouped_folds(m.groups, m.y, k=3, repeats=1))


def test_pbe_baselines_by_hand():
    pbe = np.linspace(0.5, 6.0, len(FORMULAS))
    pbe[3] = np.nan
    m = materials(pbe)
    raw = fit_final(RawPBE(), m, seed=0).predict(m)
    assert np.allclose(raw.mean, pbe, equal_nan=True)  # NaN where the PBE gap is unknown
    line = fit_final(LinearPBE(), m, seed=0).predict(m)  # exp = 1.5 PBE + 0.5 exactly
    assert np.allclose(line.mean[[0, 1]], 1.5 * pbe[[0, 1]] + 0.5)


def test_the_registry_holds_the_five_baselines_in_order():
    assert registered()[:5] == [
        "pbe",
        "pbe_linear",
        "gbm_composition",
        "gbm_composition_pbe",
        "gbm_composition_pbe_correction",
    ]
    assert all(r.label for r in baselines())
