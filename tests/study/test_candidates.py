"""The methods stage's ensemble bookkeeping: members kept apart, and smaller ensembles scored."""

import numpy as np
import pandas as pd

from cgcnn.study.candidates import ensemble_size_table, member_table


def test_member_table_has_one_row_per_member_and_material():
    preds = np.array([[1.0, 2.0, 3.0], [1.5, 2.5, 3.5]])  # [members, materials]
    table = member_table(preds, ["a", "b", "c"], repeat=0, fold=2)
    assert len(table) == 6 and set(table["fold"]) == {2} and set(table["repeat"]) == {0}
    assert table.set_index(["member", "material_id"]).loc[(1, "b"), "prediction"] == 2.5
    assert np.allclose(table.groupby("material_id")["prediction"].mean().loc[["a", "b", "c"]], preds.mean(axis=0))


def test_ensemble_size_table_scores_the_first_k_members_alone_and_with_trees():
    truth = pd.Series({"a": 1.0, "b": 2.0})
    # member 0 is 1 eV too high, member 1 is 1 eV too low: one member errs by 1, both average to the truth
    preds = np.array([[2.0, 3.0], [0.0, 1.0]])
    members = member_table(preds, ["a", "b"], repeat=0, fold=0)
    trees = pd.DataFrame({"repeat": 0, "fold": 0, "material_id": ["a", "b"], "prediction": [1.0, 2.0]})
    table = ensemble_size_table("delta", members, truth, {"_trees": trees}).set_index(["method", "members"])
    assert table.loc[("delta", 1), "mae"] == 1.0 and table.loc[("delta", 2), "mae"] == 0.0
    assert table.loc[("delta", 1), "vs_all_members"] == 1.0 and table.loc[("delta", 2), "vs_all_members"] == 0.0
    # averaged (equal weights) with exact trees: half the network's error
    assert table.loc[("delta_trees", 1), "mae"] == 0.5 and table.loc[("delta_trees", 2), "mae"] == 0.0


def test_ensemble_size_table_without_trees_has_the_network_only():
    truth = pd.Series({"a": 0.0})
    members = member_table(np.array([[1.0], [3.0], [2.0]]), ["a"], repeat=0, fold=0)
    table = ensemble_size_table("delta", members, truth)
    assert list(table["method"].unique()) == ["delta"] and list(table["mae"]) == [1.0, 2.0, 2.0]


def test_split_trees_names_the_network_and_what_its_trees_learn():
    from cgcnn.study.display import split_trees

    assert split_trees("delta_composition_trees") == ("delta_composition", "gap")
    assert split_trees("delta_composition_ctrees") == ("delta_composition", "correction")
    assert split_trees("delta_huber") == ("delta_huber", None)
