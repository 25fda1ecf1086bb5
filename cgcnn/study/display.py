"""Names and tables for reading: every model's label, the CV and DS3 tables as text.

One place for what a model key means to a reader (``m2`` → "M2 (policy chosen by CV)"), so the
notebooks, the report and the model card say the same thing.  Nothing here computes a number.
"""

from __future__ import annotations

import pandas as pd

from cgcnn.study.recipes import CANDIDATES
from cgcnn.study.recipes import labels as recipe_labels
from cgcnn.training.freeze import POLICY_TABLE

METHOD_LABELS = {name: c.label for name, c in CANDIDATES.items()}  # the methods candidates (cgcnn.study.recipes)


_OTHER_LABELS = {
    "hse06": "HSE06",
    "g0w0": "G0W0",
    "m1": "M1 (base, DS1)",
    "m2": "M2 (policy chosen by CV)",
    **{f"m2_{name}": f"M2, {policy.label}" for name, policy in POLICY_TABLE.items()},
    "control": "control (DS2 from scratch)",
    "ensemble": "CGCNN ensemble (method chosen by CV)",
    **{f"ens_{k}": v for k, v in METHOD_LABELS.items()},
}


def model_labels() -> dict[str, str]:
    """Every model's reader's name, in the order tables list them: the registered baselines
    (:mod:`cgcnn.study.recipes`, read at call time, so a recipe registered later is included),
    then the reference methods, M1, M2 and the control, the ensembles."""
    return {**recipe_labels(), **_OTHER_LABELS}


def __getattr__(name: str):  # MODEL_LABELS / BASELINES: the registry as it is now
    if name == "MODEL_LABELS":
        return model_labels()
    if name == "BASELINES":
        return recipe_labels()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def label(model: str) -> str:
    """The reader's name of a model key (the key itself when it has none)."""
    return model_labels().get(model, model)


def display_cv_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The CV table for reading: MAE ± std over repeats with its interval, RMSE, R², n,
    and the paired differences."""

    def pm(m, s):
        return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if pd.notna(s) else "")

    out = pd.DataFrame(index=table.index)
    out["model"] = [label(m) for m in table.index]
    out["MAE"] = [pm(m, s) for m, s in zip(table["mae"], table["mae_std"])]
    out["MAE 95% CI"] = [f"[{lo:.{digits}f}, {hi:.{digits}f}]" for lo, hi in zip(table["mae_lo"], table["mae_hi"])]
    out["RMSE"] = [pm(m, s) for m, s in zip(table["rmse"], table["rmse_std"])]
    out["R²"] = [pm(m, s) for m, s in zip(table["r2"], table["r2_std"])]
    out["n"] = table["n"]
    return add_differences(out, table, digits)


def display_table(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A DS3 ``summary`` for reading: MAE with its interval, RMSE, R², n, seeds, paired differences."""

    def f(v):
        return "" if pd.isna(v) else f"{v:.{digits}f}"

    out = pd.DataFrame(index=summary.index)
    out["model"] = summary["label"]
    out["MAE [95% CI]"] = [
        f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
        for m, lo, hi in zip(summary["mae"], summary["mae_lo"], summary["mae_hi"])
    ]
    out["RMSE"] = summary["rmse"].map(f)
    out["R²"] = summary["r2"].map(f)
    out["n"] = summary["n"]
    out["seeds"] = summary["seeds"]
    return add_differences(out, summary, digits)


def add_differences(out: pd.DataFrame, table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Add the paired differences of ``table`` to the display table ``out`` as "+d [lo, hi]"."""
    for key, name in (("diff_vs_best_baseline", "Δ vs best baseline"), ("diff_vs_control", "Δ vs control")):
        if key in table:
            out[name] = [
                f"{d:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]" if pd.notna(d) else ""
                for d, lo, hi in zip(table[key], table[f"{key}_lo"], table[f"{key}_hi"])
            ]
    return out


def settings_table(rows: dict) -> pd.DataFrame:
    """A one-column table of the settings a notebook step uses (values shown as text)."""
    return pd.Series({k: v if isinstance(v, str) else str(v) for k, v in rows.items()}, name="setting").to_frame()
