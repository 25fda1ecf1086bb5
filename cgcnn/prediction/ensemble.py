"""Deep ensembles: several trained models → a mean prediction and its spread.

An ensemble is a list of loaded checkpoints of the same kind (same graph settings and atom
features), e.g. one model per seed.  Its prediction for a crystal is the members' mean and
``scale`` × their standard deviation (population std, so one member gives 0); ``scale`` is a
calibration factor fitted on out-of-fold predictions (:func:`calibration_scale`), so that
about 68 % of true gaps fall within ±1 std.

PBE-aware members read a PBE gap per crystal.  It is, in order: the one given by the user
(``source = "given"``); otherwise the members' own prediction at the ``pbe`` fidelity when
they are multi-fidelity models, or the prediction of ``pbe_model`` (the base model M1), both
``"predicted"``; otherwise unknown (``"unknown"``, the models' own "PBE unknown" input).

**No negative gap.**  A band gap is never negative, but a regression head can predict one
(the shipped M1 gives graphite −0.16 eV, copper −0.28 eV).  Every gap this module returns —
the prediction and a predicted PBE gap (which is also what PBE-aware members then read) — is
clipped at 0 eV.  Clipping the prediction never increases an error: for any true gap
``y >= 0``, ``|max(p, 0) - y| <= |p - y|``, so no CV MAE can get worse; the spread is the
members' own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from cgcnn.data.dataset import CrystalDataset
from cgcnn.data.descriptors import attach_inputs, composition_features, pbe_column
from cgcnn.prediction.inference import predict
from cgcnn.prediction.trees import TreeMember
from cgcnn.prediction.trust import add_trust_columns
from cgcnn.training.checkpoint import Loaded

Z_1SIGMA = 0.6744897501960817  # median of |N(0, 1)|


def _check_members(members: Sequence[Loaded]) -> None:
    if not members:
        raise ValueError("an ensemble needs at least one member")
    first = members[0]
    for k, m in enumerate(members[1:], start=1):
        if m.graph_config != first.graph_config or m.features != first.features:
            raise ValueError(f"ensemble member {k} uses other graph settings or atom features than member 0")
        if m.model_config.model_dump(exclude={"fidelity_dim"}) != first.model_config.model_dump(
            exclude={"fidelity_dim"}
        ):
            raise ValueError(f"ensemble member {k} is another kind of model (model config differs from member 0)")


def resolve_pbe(
    members: Sequence[Loaded],
    dataset: CrystalDataset,
    given: Mapping[str, float] | None,
    pbe_model: Loaded | None,
    *,
    batch_size: int,
    device,
) -> tuple[np.ndarray, np.ndarray]:
    """(PBE gap in eV or NaN, source) per crystal of ``dataset`` (see the module docstring)."""
    pbe = pbe_column(dataset.ids, given or {})
    source = np.where(np.isfinite(pbe), "given", "unknown").astype(object)
    todo = ~np.isfinite(pbe)
    if not todo.any():
        return pbe, source
    cfg = members[0].model_config
    if "pbe" in cfg.fidelities:
        sub = dataset.subset_positions(np.flatnonzero(todo))
        preds = []
        for m in members:
            attach_inputs(sub, m.model_config, fidelity="pbe", pbe=None)
            preds.append(predict(m, sub, batch_size=batch_size, device=device))
        pbe[todo] = np.maximum(np.mean(preds, axis=0), 0.0)  # a PBE gap is never negative
        source[todo] = "predicted"
    elif pbe_model is not None:
        sub = dataset.subset_positions(np.flatnonzero(todo))
        pbe[todo] = np.maximum(predict(pbe_model, sub, batch_size=batch_size, device=device), 0.0)
        source[todo] = "predicted"
    return pbe, source


def mix(mean: np.ndarray, std: np.ndarray, other: np.ndarray, weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of a weighted ensemble: the CGCNN members (``mean``,
    population ``std``) sharing weight ``1 - weight``, and one more member predicting
    ``other`` with weight ``weight``:  mean ``(1-w)·m + w·o``, variance
    ``(1-w)·s² + w·(1-w)·(m - o)²``."""
    w = float(weight)
    mean, std, other = (np.asarray(a, dtype=np.float64) for a in (mean, std, other))
    return (1 - w) * mean + w * other, np.sqrt((1 - w) * std**2 + w * (1 - w) * (mean - other) ** 2)


def ensemble_predict(
    members: Sequence[Loaded],
    dataset: CrystalDataset,
    *,
    pbe: Mapping[str, float] | None = None,
    pbe_model: Loaded | None = None,
    scale: float = 1.0,
    fidelity: str | None = None,
    trees=None,
    trees_weight: float = 0.5,
    trust=None,
    level: float | None = None,
    batch_size: int = 256,
    device="auto",
) -> pd.DataFrame:
    """Mean and spread of the members' predictions for every crystal of ``dataset``.

    Columns: ``material_id, prediction_ev, prediction_std_ev, n_members``, plus
    ``pbe_gap_ev, pbe_gap_source`` for PBE-aware members.  ``fidelity``: for multi-fidelity
    members, the fidelity to predict (default: the model's last, e.g. ``experiment``).
    ``trees``: boosted trees on composition and the PBE gap (a :class:`cgcnn.prediction.trees.TreeMember`,
    or a bare fitted model predicting the gap), one more member with weight ``trees_weight`` (:func:`mix`).  ``trust``
    (:class:`cgcnn.prediction.trust.Trust`): also ``prediction_lo_ev, prediction_hi_ev``
    (the central interval at ``level``, default the calibration's), ``in_domain`` and
    ``domain_note``; its crystal features come from ``pbe_model`` (M1).
    """
    _check_members(members)
    cfg = members[0].model_config
    table = pd.DataFrame({"material_id": list(dataset.ids)})
    pbe_values = None
    if cfg.pbe_input:
        pbe_values, source = resolve_pbe(members, dataset, pbe, pbe_model, batch_size=batch_size, device=device)
    preds = []
    for m in members:
        attach_inputs(dataset, m.model_config, fidelity=fidelity, pbe=pbe_values)
        preds.append(predict(m, dataset, batch_size=batch_size, device=device))
    stack = np.vstack(preds)
    mean, std = stack.mean(axis=0), stack.std(axis=0)
    if trees is not None:
        comp = (
            dataset.inputs["composition"] if "composition" in dataset.inputs else composition_features(dataset.graphs)
        )
        tree_pbe = pbe_values if pbe_values is not None else np.full(len(dataset), np.nan)
        member = trees if isinstance(trees, TreeMember) else TreeMember(trees)  # a bare model learnt the gap
        mean, std = mix(mean, std, member.predict(comp, tree_pbe), trees_weight)
    table["prediction_ev"] = np.maximum(mean, 0.0)  # no negative gap (see the module docstring)
    table["prediction_std_ev"] = float(scale) * std
    table["n_members"] = len(members) + (trees is not None)
    if cfg.pbe_input:
        table["pbe_gap_ev"] = pbe_values.astype(np.float64)
        table["pbe_gap_source"] = source
    if trust is not None:
        if pbe_model is None:
            raise ValueError("intervals and the domain flag need the feature model (pbe_model, M1)")
        add_trust_columns(table, std, dataset, trust, pbe_model, level=level, batch_size=batch_size, device=device)
    return table


def calibration_scale(errors: np.ndarray, stds: np.ndarray) -> float:
    """The factor s that makes ``|error| <= s·std`` hold for the median material, i.e. for
    ~68 % of them as for a normal error (fitted on out-of-fold predictions only).  Materials
    with zero spread are ignored; 1.0 when nothing is left."""
    e, s = np.abs(np.asarray(errors, float)), np.asarray(stds, float)
    ok = np.isfinite(e) & np.isfinite(s) & (s > 0)
    if not ok.any():
        return 1.0
    return float(np.median(e[ok] / s[ok]) / Z_1SIGMA)


def coverage(errors: np.ndarray, stds: np.ndarray, k: float) -> float:
    """Fraction of materials with ``|error| <= k·std``."""
    e, s = np.abs(np.asarray(errors, float)), np.asarray(stds, float)
    return float(np.mean(e <= k * s)) if len(e) else float("nan")
