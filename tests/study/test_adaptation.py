"""cgcnn.study.adaptation: model names, the one learning-rate choice, the choices table.

The fits themselves run in tests/test_notebooks.py (domain-adaptation notebook).
"""

import numpy as np
import pandas as pd
import pytest

from cgcnn import study
from cgcnn.study.adaptation import _choices_table, choose_lr


def test_model_keys():
    assert study.model_key("convs") == "m2_convs"
    assert study.model_key("control") == "control"
    assert set(study.MODEL_LABELS) >= {"pbe", "pbe_linear", "hse06", "g0w0", "m1", "m2", "control"}


def _row(model, lr, seed, mae, phase="grid", epoch=3):
    policy = model.removeprefix("m2_")
    return {"model": model, "policy": policy, "lr": lr, "seed": seed, "phase": phase,
            "best_val_mae": mae, "best_epoch": epoch}


def test_choose_lr_takes_the_lowest_mean_validation_mae_and_the_first_rate_on_ties():
    rows = [_row("m2_none", 0.01, 0, 0.5), _row("m2_none", 0.01, 1, 0.3),
            _row("m2_none", 0.001, 0, 0.2), _row("m2_none", 0.001, 1, 0.7)]
    assert choose_lr(rows) == 0.01                      # 0.40 < 0.45
    tie = [_row("m2_none", 0.003, 0, 0.4), _row("m2_none", 0.001, 0, 0.4)]
    assert choose_lr(tie) == 0.003


def test_choices_use_the_chosen_rate_over_all_seeds_and_select_the_best_policy():
    runs = pd.DataFrame([
        _row("m2_none", 0.01, 0, 0.5), _row("m2_none", 0.001, 0, 0.6), _row("m2_none", 0.01, 1, 0.3, "seeds"),
        _row("m2_head", 0.01, 0, 0.9), _row("m2_head", 0.001, 0, 0.2), _row("m2_head", 0.001, 1, 0.4, "seeds"),
        _row("control", 0.01, 0, 0.1), _row("control", 0.001, 0, 0.2), _row("control", 0.01, 1, 0.1, "seeds"),
    ])
    chosen = {"m2_none": 0.01, "m2_head": 0.001, "control": 0.01}
    choices, selected = _choices_table(runs, chosen)
    assert list(choices.index) == ["m2_none", "m2_head", "control"]
    assert choices.loc["m2_none", "val_mae"] == pytest.approx(0.4)
    assert choices.loc["m2_none", "val_mae_std"] == pytest.approx(np.std([0.5, 0.3], ddof=1))
    assert choices.loc["m2_head", "val_mae"] == pytest.approx(0.3) and choices.loc["m2_head", "seeds"] == 2
    assert selected == "head"                           # the control (0.1) is never M2
    assert choices["selected"].tolist() == [False, True, False]


def test_missing_adaptation_names_the_stage_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="domain-adaptation stage"):
        study.load_adaptation(tmp_path)
