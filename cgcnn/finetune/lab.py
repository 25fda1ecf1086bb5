"""A lab's own measurements: the table of gaps, the structures, and what the shipped ensemble
says about them before any adaptation (the *zero-shot* prediction).

The table is a CSV ``material_id,bg_exp`` with an optional ``pbe_gap_ev`` (a PBE gap the lab
computed; blank = unknown: a snapshot's own ``band_gap`` when the structures are a snapshot,
else the shipped M1 predicts one, as ``cgcnn predict`` does).  The
structures are read and checked exactly as ``cgcnn predict`` reads them
(:func:`cgcnn.data.building.read_inputs`: CIF files or folders, ids = file names without the
suffix; a snapshot ``.jsonl.gz``; a saved graph set).  Every row or structure that cannot be
used is a :class:`~cgcnn.errors.Problem` naming it and why — an id listed twice, a gap that is
not a number or is negative, an id with no structure, a structure the checks refuse — and the
rest is used (``on_error="error"`` stops at the first instead).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cgcnn.data.building import build_graphs, read_inputs, snapshot_pbe_gaps, snapshot_structures
from cgcnn.data.dataset import CrystalDataset
from cgcnn.data.descriptors import MAX_PBE_GAP_EV, attach_inputs, composition_features
from cgcnn.errors import DatasetError, OnError, Problem
from cgcnn.prediction.domain import formulas
from cgcnn.prediction.ensemble import ensemble_predict
from cgcnn.prediction.trust import crystal_features
from cgcnn.study.recipes import Materials

__all__ = ["Lab", "TooFewMaterials", "load_lab", "read_table"]

ID, GAP, PBE = "material_id", "bg_exp", "pbe_gap_ev"


class TooFewMaterials(DatasetError):
    """Fewer usable materials than cross-validation needs."""


def _report(problems: list[Problem], p: Problem, on_error: OnError) -> None:
    if on_error == "error":
        raise DatasetError(f"{p}; fix it, or leave out --on-error error to skip such rows")
    problems.append(p)


def _number(text: str, what: str, *, upper: float | None = None) -> tuple[float | None, str | None]:
    """(value, None) or (None, why not) for one cell."""
    try:
        value = float(text)
    except ValueError:
        return None, f"{what} {text!r} is not a number; give it in eV"
    if not math.isfinite(value):
        return None, f"{what} {text!r} is not a finite number; give it in eV"
    if value < 0:
        return None, f"{what} {value:g} eV is negative; a band gap is >= 0 eV"
    if upper is not None and value > upper:
        return None, f"{what} {value:g} eV is above {upper:g} eV; give it in eV"
    return value, None


def read_table(path: str | Path, *, on_error: OnError = "skip") -> tuple[pd.DataFrame, list[Problem]]:
    """The usable rows of a lab table (``material_id, bg_exp, pbe_gap_ev`` with NaN = unknown)
    and the rows left out, each a :class:`Problem` naming its id (or row) and why.

    Raises:
        DatasetError: no such file, or no ``material_id`` / ``bg_exp`` column.
    """
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise DatasetError(f"table {path}: no such file; give a CSV material_id,bg_exp[,pbe_gap_ev]") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"table {path}: not a readable CSV ({str(exc).splitlines()[0]}); save it as CSV") from None
    raw.columns = [c.strip() for c in raw.columns]
    missing = [c for c in (ID, GAP) if c not in raw.columns]
    if missing:
        raise DatasetError(
            f"table {path}: no column {missing[0]!r} (columns: {', '.join(raw.columns) or 'none'}); "
            "give a CSV material_id,bg_exp[,pbe_gap_ev]"
        )
    problems: list[Problem] = []
    ids = raw[ID].str.strip()
    counts = ids.value_counts()
    rows = []
    for k, (mid, gap) in enumerate(zip(ids, raw[GAP].str.strip())):
        line = k + 2  # the header is line 1
        if not mid:
            _report(problems, Problem(f"line {line}", "no material_id; give every row an id"), on_error)
            continue
        if counts[mid] > 1:
            lines = ", ".join(str(j + 2) for j in np.flatnonzero(ids.to_numpy() == mid))
            if line == int(lines.split(",")[0]):
                why = f"listed {counts[mid]} times (lines {lines}); give each material once"
                _report(problems, Problem(mid, why), on_error)
            continue
        value, why = _number(gap, "bg_exp")
        if why is None and PBE in raw.columns and raw[PBE].iloc[k].strip():
            pbe, why = _number(raw[PBE].iloc[k].strip(), "pbe_gap_ev", upper=MAX_PBE_GAP_EV)
        else:
            pbe = np.nan
        if why is not None:
            _report(problems, Problem(mid, why), on_error)
            continue
        rows.append({ID: mid, GAP: value, PBE: pbe})
    out = pd.DataFrame(rows, columns=[ID, GAP, PBE])
    out.attrs["n_rows"] = len(raw)
    return out, problems


@dataclass
class Lab:
    """The usable materials of a lab, with the shipped ensemble's zero-shot view of them.

    Attributes:
        materials: what the recipes read (:class:`cgcnn.study.recipes.Materials`: ids, reduced
            formulas as groups, ``bg_exp``, the given PBE gap as ``bg_pbe``, and the PBE gap the
            ensemble read — given, or predicted by M1 — as ``pbe_read``).
        dataset: the crystals, labelled, with the inputs the shipped members read.
        zero_shot, spread: the shipped ensemble's prediction (eV) and raw spread per material.
        tree_gap: the shipped tree member's prediction (what the fine-tuned members are averaged with).
        pbe_source: ``given`` or ``predicted`` per material.
        features: M1's crystal features (the applicability domain's space).
        model: the shipped ensemble (:class:`cgcnn.prediction.predictor.Predictor`).
        problems: every row or structure left out, and why; ``n_listed``: rows in the table.
    """

    materials: Materials
    dataset: CrystalDataset
    zero_shot: np.ndarray
    spread: np.ndarray
    tree_gap: np.ndarray
    pbe_source: np.ndarray
    features: np.ndarray
    model: Any
    problems: list[Problem]
    n_listed: int
    notes: list[Problem] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return self.materials.ids

    def __len__(self) -> int:
        return len(self.materials)


def _snapshot(structures) -> Path | None:
    """The snapshot file when ``structures`` is one (a path, or a list holding one path)."""
    paths = [structures] if isinstance(structures, (str, Path)) else structures
    if isinstance(paths, (list, tuple)) and len(paths) == 1 and isinstance(paths[0], (str, Path)):
        path = Path(paths[0])
        if path.is_file() and path.name.endswith((".jsonl.gz", ".jsonl")):
            return path
    return None


def _read_structures(structures, cfg, wanted: set[str], **kw):
    """:func:`read_inputs`, reading only the table's ids from a snapshot (which may hold many more)."""
    snapshot = _snapshot(structures)
    if snapshot is not None:
        return build_graphs(snapshot_structures(snapshot, ids=wanted), cfg, **kw)
    return read_inputs(structures, cfg, **kw)


def _groups(graphs) -> list[str]:
    from pymatgen.core import Composition

    return [Composition(f).reduced_formula for f in formulas(graphs)]


def load_lab(
    table: str | Path,
    structures,
    model,
    *,
    min_materials: int = 20,
    on_error: OnError = "skip",
    strict: bool = False,
    workers: int = 1,
    echo: Callable[[str], Any] | None = None,
    report: Callable[[Problem], Any] | None = None,
) -> Lab:
    """Read the table and the structures, keep what is usable, and predict it zero-shot with
    ``model`` (the shipped ensemble, a :class:`~cgcnn.prediction.predictor.Predictor`).
    ``report`` receives every row or structure left out (and every parser remark) as it is known.

    Raises:
        TooFewMaterials: fewer than ``min_materials`` usable materials (the message says how
            many there are, how many were left out and how many are needed).
        DatasetError: an unreadable table or input; with ``on_error="error"``, the first bad item.
    """
    if model.trust is None or not model.pbe_aware:
        raise DatasetError(
            f"{model.source}: cgcnn finetune adapts an ensemble with calibrated intervals (the shipped "
            "'ensemble', or a copy of it); give --base ensemble"
        )
    rows, problems = read_table(table, on_error=on_error)
    notes: list[Problem] = []
    cfg = model.loaded.graph_config
    strict = strict or on_error == "error"  # as cgcnn predict: --on-error error implies --strict
    graphs, skipped = (
        _read_structures(
            structures,
            cfg,
            set(rows[ID]),
            workers=workers,
            on_error=on_error,
            progress=False,
            strict=strict,
            notes=notes,
        )
        if len(rows)
        else (None, [])
    )
    wanted = set(rows[ID])
    problems += [p for p in skipped if p.item_id.split(":")[0] in wanted or p.item_id in wanted]
    if graphs is not None:
        for mid in rows[ID]:
            if mid not in graphs and not any(p.item_id == mid for p in problems):
                hint = "ids are CIF file names without the suffix, or a snapshot's material_id"
                _report(problems, Problem(mid, f"no structure among the inputs ({hint})"), on_error)
        kept = rows[rows[ID].isin(set(graphs.ids))]
        ds = CrystalDataset(graphs, list(zip(kept[ID], kept[GAP])), model.loaded.features, on_error=on_error)
        problems += [p for p in ds.problems if p.item_id not in {q.item_id for q in problems}]
    n = len(ds) if graphs is not None else 0
    for p in (notes + problems) if report is not None else ():
        report(p)
    if n < min_materials:
        left = f" ({len(problems)} left out: {problems[0]}{' …' if len(problems) > 1 else ''})" if problems else ""
        raise TooFewMaterials(
            f"{table}: {n} usable material(s) of {rows.attrs['n_rows']} listed{left}; grouped "
            f"cross-validation needs at least {min_materials}: measure more materials, or score the shipped "
            "model on these with cgcnn evaluate"
        )
    frame = rows.set_index(ID).loc[ds.ids]
    if _snapshot(structures) is not None:  # as cgcnn predict: a snapshot's own PBE gaps count as given
        known = snapshot_pbe_gaps(structures)
        frame[PBE] = [v if np.isfinite(v) else known.get(m, np.nan) for m, v in frame[PBE].items()]
    given = {m: float(v) for m, v in frame[PBE].items() if np.isfinite(v)}
    if echo is not None:
        echo(f"{n} materials ({len(given)} with a PBE gap given); {len(problems)} left out; zero-shot predictions …")
    members = model.members
    zs = ensemble_predict(
        members,
        ds,
        pbe=given,
        pbe_model=model.pbe_model,
        scale=1.0,
        trees=model.trees,
        trees_weight=model.trees_weight,
        device=model.device,
    )
    read = zs["pbe_gap_ev"].to_numpy(np.float64)
    attach_inputs(ds, members[0].model_config, pbe=read)  # what the members (and their fine-tuned copies) read
    comp = composition_features(ds.graphs)
    tree_gap = model.trees.predict(comp, read) if model.trees is not None else zs["prediction_ev"].to_numpy()
    mat_frame = pd.DataFrame(
        {
            "material_id": ds.ids,
            "formula": formulas(ds.graphs),
            "group": _groups(ds.graphs),
            "bg_exp": frame[GAP].to_numpy(np.float64),
            "bg_pbe": frame[PBE].to_numpy(np.float64),
        }
    ).set_index("material_id", drop=False)
    materials = Materials(mat_frame, pbe_inputs=read)
    materials.magpie = comp.astype(np.float64)  # the same features the shipped trees read at prediction
    features = crystal_features(model.pbe_model, ds, device=model.device)
    return Lab(
        materials,
        ds,
        zs["prediction_ev"].to_numpy(np.float64),
        zs["prediction_std_ev"].to_numpy(np.float64),
        np.asarray(tree_gap, np.float64),
        zs["pbe_gap_source"].to_numpy(),
        features,
        model,
        problems,
        int(rows.attrs["n_rows"]),
        notes,
    )
