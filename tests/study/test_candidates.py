"""The methods stage's ensemble bookkeeping: members kept apart, and smaller ensembles scored."""

import numpy as np
import pandas as pd

from cgcnn.study.candidates import ensemble_size_table


def member_table(preds: np.ndarray, ids: list[str]) -> pd.DataFrame:
    """Each member's predictions ([members, n]) as the fold loop writes them: one row per pair."""
    k, n = preds.shape
    return pd.DataFrame(
        {
            "repeat": 0,
            "fold": 0,
            "material_id": np.tile(ids, k),
            "member": np.repeat(np.arange(k), n),
            "prediction": preds.reshape(-1),
        }
    )


def test_ensemble_size_table_scores_the_first_k_members_alone_and_with_trees():
    truth = pd.Series({"a": 1.0, "b": 2.0})
    # member 0 is 1 eV too high, member 1 is 1 eV too low: one member errs by 1, both average to the truth
    preds = np.array([[2.0, 3.0], [0.0, 1.0]])
    members = member_table(preds, ["a", "b"])
    trees = pd.DataFrame({"repeat": 0, "fold": 0, "material_id": ["a", "b"], "prediction": [1.0, 2.0]})
    table = ensemble_size_table("delta", members, truth, {"_trees": trees}).set_index(["method", "members"])
    assert table.loc[("delta", 1), "mae"] == 1.0 and table.loc[("delta", 2), "mae"] == 0.0
    assert table.loc[("delta", 1), "vs_all_members"] == 1.0 and table.loc[("delta", 2), "vs_all_members"] == 0.0
    # averaged (equal weights) with exact trees: half the network's error
    assert table.loc[("delta_trees", 1), "mae"] == 0.5 and table.loc[("delta_trees", 2), "mae"] == 0.0


def test_ensemble_size_table_without_trees_has_the_network_only():
    truth = pd.Series({"a": 0.0})
    members = member_table(np.array([[1.0], [3.0], [2.0]]), ["a"])
    table = ensemble_size_table("delta", members, truth)
    assert list(table["method"].unique()) == ["delta"] and list(table["mae"]) == [1.0, 2.0, 2.0]


def test_candidates_are_a_table_not_a_grammar():
    from cgcnn.study.recipes import BACKBONES, CANDIDATES, candidate

    c = candidate("delta_composition_ctrees")
    assert (c.network, c.loss, c.trees, c.base) == ("delta_composition", None, "correction", "delta_composition")
    h = candidate("delta_huber_trees")
    assert (h.network, h.loss, h.trees, h.base) == ("delta", "huber", "gap", "delta_huber")
    assert candidate("delta_huber").trees is None
    # every CGCNN network, with and without the Huber loss, and every backbone candidate, alone and
    # averaged with either kind of trees
    assert len(CANDIDATES) == 3 * 2 * 3 + len(BACKBONES) * 3
    assert candidate("chgnet_readout_ctrees").base == "chgnet_readout"
    assert CANDIDATES["delta_ctrees"].label.startswith(CANDIDATES["delta"].label)


def test_an_averaged_candidate_mixes_its_network_and_trees_with_fixed_equal_weights():
    from cgcnn.study.candidates import Averaged
    from cgcnn.study.recipes import Fitted, Materials, Prediction, Recipe

    class Constant(Recipe):
        def __init__(self, name, value, spread=None):
            self.name, self.label, self.value, self.spread = name, name, value, spread

        def fit(self, materials, train, *, seed, split=None):
            def predict(m, pos):
                n = len(pos)
                s = None if self.spread is None else np.full(n, self.spread)
                return Prediction(np.full(n, self.value), s)

            return Fitted(predict)

    frame = pd.DataFrame(
        {
            "material_id": ["a", "b"],
            "formula": ["NaCl", "KCl"],
            "group": ["NaCl", "KCl"],
            "bg_exp": [1.0, 2.0],
            "bg_pbe": [0.5, 1.0],
        }
    )
    avg = Averaged("x", "x", Constant("net", 3.0, 0.2), Constant("trees", 1.0))
    pred = avg.fit(Materials(frame), np.arange(2), seed=0).predict(Materials(frame))
    # mean (3 + 1) / 2; spread of the mixture: sqrt(0.5 * 0.2^2 + 0.5 * 0.5 * (3 - 1)^2)
    assert np.allclose(pred.mean, 2.0) and np.allclose(pred.spread, np.sqrt(0.5 * 0.04 + 0.25 * 4))
