"""cgcnn.study.evaluation: DS3 summaries, the metrics.json block and the display table."""

import numpy as np
import pandas as pd
import pytest

from cgcnn import study
from cgcnn.study.evaluation import _metrics_json_block, _summarise


def test_summarise_gives_mean_and_sample_std_over_seeds():
    truth = pd.Series({"a": 1.0, "b": 2.0})
    preds = pd.DataFrame({
        "material_id": ["a", "b", "a", "b", "a", "b"],
        "model": ["m2", "m2", "m2", "m2", "pbe", "pbe"],
        "seed": [0, 0, 1, 1, np.nan, np.nan],
        "prediction": [1.5, 2.5, 1.0, 2.0, 0.0, 1.0],   # m2 MAE 0.5 (seed 0) and 0.0 (seed 1); pbe 1.0
    })
    per_seed, summary = _summarise(preds, truth, ["a", "b"])
    assert len(per_seed) == 3
    assert summary.loc["m2", "mae"] == pytest.approx(0.25)
    assert summary.loc["m2", "mae_std"] == pytest.approx(np.std([0.5, 0.0], ddof=1))
    assert summary.loc["m2", "seeds"] == 2
    assert summary.loc["pbe", "mae"] == pytest.approx(1.0)
    assert np.isnan(summary.loc["pbe", "mae_std"]) and summary.loc["pbe", "seeds"] == 1
    # restricted to one material
    _, only_a = _summarise(preds, truth, ["a"])
    assert only_a.loc["m2", "mae"] == pytest.approx(0.25) and only_a.loc["m2", "n"] == 1


def test_metrics_json_block_has_std_only_for_models_with_seeds():
    summary = pd.DataFrame(
        {"label": ["PBE", "M2"], "mae": [1.0, 0.25], "mae_std": [np.nan, 0.1], "rmse": [1.0, 0.3],
         "rmse_std": [np.nan, 0.1], "r2": [0.1, 0.9], "r2_std": [np.nan, 0.01], "max_error": [1.0, 0.5],
         "max_error_std": [np.nan, 0.1], "n": [2, 2], "seeds": [1, 3]},
        index=pd.Index(["pbe", "m2"], name="model"),
    )
    block = _metrics_json_block(summary)
    assert block["pbe"] == {"mae": 1.0, "rmse": 1.0, "r2": 0.1, "max_error": 1.0, "n": 2, "label": "PBE", "seeds": 1}
    assert block["m2"]["mae_std"] == 0.1 and block["m2"]["seeds"] == 3


def test_display_table_writes_mean_plus_minus_std():
    summary = pd.DataFrame(
        {"label": ["M2"], "mae": [0.5], "mae_std": [0.1], "rmse": [0.6], "rmse_std": [np.nan],
         "r2": [0.75], "r2_std": [0.05], "n": [29], "seeds": [3]},
        index=["m2"],
    )
    table = study.display_table(summary)
    assert table.loc["m2", "MAE"] == "0.500 ± 0.100"
    assert table.loc["m2", "RMSE"] == "0.600"
    assert table.loc["m2", "R²"] == "0.750 ± 0.050"
