"""Does the backbone matter?  Paired comparisons of the CV predictions of CGCNN and of a pretrained
universal backbone (CHGNet), and of fine-tuning against frozen features on each.

Every comparison is ``MAE(a) − MAE(b)`` on the DS2 materials both predict, each material's
absolute error averaged over the CV repeats, with a paired bootstrap 95 % interval over
materials (negative: ``a`` is better).  The pairs, each side the one with the lowest CV MAE among
its kind (so both sides were chosen the same way):

* the backbones alone (no trees), and each averaged with boosted trees;
* on CHGNet: its readout or last block fine-tuned, against a head on its frozen features;
* on CGCNN: M1 fine-tuned with nothing frozen (``m2_none``), against a head trained on M1's
  frozen crystal features (``m2_convs``: embedding and convolutions frozen; ``m2_head``, only the
  output layer trained, where the profile has no ``convs``) — the cross-validation stage's fits.
"""

from __future__ import annotations

import pandas as pd

from cgcnn.evaluation.bootstrap import bootstrap_mean
from cgcnn.study.recipes import BACKBONES, CANDIDATES, candidate

__all__ = ["backbone_comparisons"]


def _errors(predictions: pd.DataFrame, truth: pd.Series) -> pd.DataFrame:
    err = (predictions["prediction"] - truth.loc[predictions["material_id"]].to_numpy()).abs()
    return predictions.assign(err=err.to_numpy()).groupby(["material_id", "model"])["err"].mean().unstack("model")


def _best(errors: pd.DataFrame, models: list[str]) -> str | None:
    models = [m for m in models if m in errors]
    return min(models, key=lambda m: errors[m].mean()) if models else None


def _frozen_cgcnn(errors: pd.DataFrame) -> str:
    """CGCNN's frozen-features model among the CV stage's: embedding + convolutions frozen, else all but the output."""
    return next((m for m in ("m2_convs", "m2_head") if m in errors), "m2_convs")


def backbone_comparisons(predictions: pd.DataFrame, truth: pd.Series, *, seed: int = 0) -> pd.DataFrame:
    """One row per comparison: question, a, b, mae_a, mae_b, diff (MAE(a) − MAE(b)), lo, hi, n.
    ``predictions``: the CV predictions (model, repeat, fold, material_id, prediction) with the
    methods candidates as ``ens_<name>``.  Empty when the run has no backbone candidate."""
    errors = _errors(predictions, truth)
    names = [m.removeprefix("ens_") for m in errors.columns if m.removeprefix("ens_") in CANDIDATES]
    if not any(candidate(n).network in BACKBONES for n in names):
        return pd.DataFrame()

    def kind(trees: bool, backbone: bool, train: tuple[str, ...] | None = None) -> list[str]:
        out = []
        for n in names:
            c = candidate(n)
            is_backbone = c.network in BACKBONES
            if (c.trees is not None) != trees or is_backbone != backbone:
                continue
            if train is not None and (not is_backbone or BACKBONES[c.network].train not in train):
                continue
            out.append(f"ens_{n}")
        return out

    pairs = [
        ("backbone, alone: CHGNet − CGCNN", kind(False, True), kind(False, False)),
        ("backbone, averaged with trees: CHGNet − CGCNN", kind(True, True), kind(True, False)),
        (
            "fine-tuning on CHGNet: fine-tuned − frozen features",
            kind(False, True, ("readout", "block")),
            kind(False, True, ("frozen",)),
        ),
        ("fine-tuning on CGCNN: nothing frozen − frozen features", ["m2_none"], [_frozen_cgcnn(errors)]),
    ]
    rows = []
    for question, side_a, side_b in pairs:
        a, b = _best(errors, side_a), _best(errors, side_b)
        if a is None or b is None:
            continue
        both = errors[[a, b]].dropna()
        d = bootstrap_mean(both[a] - both[b], seed=seed)
        rows.append(
            {
                "question": question,
                "a": a,
                "b": b,
                "mae_a": float(both[a].mean()),
                "mae_b": float(both[b].mean()),
                "diff": d.value,
                "lo": d.lo,
                "hi": d.hi,
                "n": d.n,
            }
        )
    return pd.DataFrame(rows)
