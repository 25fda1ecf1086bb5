"""Labelled (or unlabelled) crystals ready for batching: label checks and :class:`CrystalDataset`."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from cgcnn.data.descriptors import INPUT_DTYPES
from cgcnn.data.graphset import GraphSet
from cgcnn.errors import DatasetError, OnError, Problem

log = logging.getLogger(__name__)


LabelRange = tuple[float | None, float | None]
BAND_GAP_RANGE: LabelRange = (0.0, None)  # band gaps: finite and >= 0 eV


def read_targets(path: str | Path, column: str | None = None) -> list[tuple[str, str]]:
    """``(material_id, label text)`` rows of a CSV, in file order (duplicates kept, so that
    :func:`parse_targets` can name them): a header with ``material_id`` and a label column
    (``column``, or the first of ``target``, ``bg_exp``, ``bg_pbe``, ``band_gap``), or the
    original headerless ``id_prop.csv``.

    Raises:
        DatasetError: the file is missing or has no label column (the message lists the columns).
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such targets file")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "material_id" not in df.columns:  # original id_prop.csv: no header
        df = pd.read_csv(path, dtype=str, header=None, keep_default_na=False)
        df.columns = ["material_id", "target"] + [f"c{k}" for k in range(2, df.shape[1])]
    if column is None:
        column = next((g for g in ("target", "bg_exp", "bg_pbe", "band_gap") if g in df.columns), None)
        if column is None:
            raise DatasetError(
                f"{path}: say which column holds the labels (--target-column); columns: {list(df.columns)}"
            )
    if column not in df.columns:
        raise DatasetError(f"{path}: no column {column!r}; columns: {list(df.columns)}")
    return list(zip(df["material_id"], df[column]))


def _check_label(v, label_range: LabelRange) -> tuple[float | None, str | None]:
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None, f"label {v!r} is not a finite number"
    if not np.isfinite(x):
        return None, f"label {v!r} is not a finite number"
    lo, hi = label_range
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        return (
            None,
            f"label {x:g} is outside the allowed range [{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]",
        )
    return x, None


def parse_targets(
    targets: Mapping[str, object] | Iterable[tuple[str, object]] | None,
    on_error: OnError = "skip",
    *,
    label_range: LabelRange = BAND_GAP_RANGE,
) -> tuple[dict[str, float], list[Problem]]:
    """Validate labels: each must be a finite number inside ``label_range`` (default: band
    gaps, >= 0), and each material labelled once.  A material labelled twice is a problem
    (skipped entirely: its label is ambiguous).  Problems name the material; with
    ``on_error="error"`` the first raises :class:`DatasetError`."""
    rows = list(targets.items()) if isinstance(targets, Mapping) else list(targets or [])
    count: dict[str, int] = {}
    for m, _ in rows:
        count[str(m)] = count.get(str(m), 0) + 1
    good: dict[str, float] = {}
    problems: list[Problem] = []
    for m, v in rows:
        m = str(m)
        if count[m] > 1:
            x, reason = None, f"labelled {count[m]} times; give one label per material"
            if any(p.item_id == m for p in problems):
                continue
        else:
            x, reason = _check_label(v, label_range)
        if reason is None:
            good[m] = x
            continue
        _report(problems, Problem(m, reason), on_error)
    return good, problems


def _report(problems: list[Problem], p: Problem, on_error: OnError) -> None:
    if on_error == "error":
        raise DatasetError(str(p))
    log.info("skipping %s", p)
    problems.append(p)


class CrystalDataset:
    """Graphs (+ optional targets) ready for batching.

    Materials whose element is missing from the feature table, whose label is not a finite
    number in ``label_range``, or that are labelled twice are left out (``on_error="skip"``,
    listed in ``problems``) or raise :class:`DatasetError` (``"error"``).

    Args:
        graphs: the crystal graphs.
        targets: ``{material_id: label}``, ``(material_id, label)`` rows (e.g. from
            :func:`read_targets`), or None for an unlabelled set (prediction).
        features: the atom-feature table of the model.
        ids: keep only these materials, in this order (default: the targets' order, or the
            graph set's when unlabelled).
    """

    def __init__(
        self,
        graphs: GraphSet,
        targets: Mapping[str, object] | Iterable[tuple[str, object]] | None,
        features,
        *,
        on_error: OnError = "skip",
        ids: Sequence[str] | None = None,
        label_range: LabelRange = BAND_GAP_RANGE,
    ):
        self.features = features
        self.config = graphs.config
        rows = None if targets is None else (list(targets.items()) if isinstance(targets, Mapping) else list(targets))
        labels, self.problems = parse_targets(rows, on_error, label_range=label_range)
        if ids is not None:
            wanted = [str(m) for m in ids]
        else:
            wanted = list(dict.fromkeys(str(m) for m, _ in rows)) if rows is not None else list(graphs.ids)
        keep = [m for m in wanted if (rows is None or m in labels) and self._usable(graphs, m, features, on_error)]
        self.graphs = graphs.subset(keep) if keep != graphs.ids else graphs
        self.ids = list(self.graphs.ids)
        self.y = np.array([labels[m] for m in self.ids], dtype=np.float32) if rows is not None else None
        self._node_counts = np.diff(self.graphs.node_ptr)
        self._edge_counts = np.diff(self.graphs.edge_ptr)
        self.inputs: dict[str, np.ndarray] = {}

    def with_inputs(self, **arrays: np.ndarray) -> CrystalDataset:
        """Attach per-crystal inputs (see :mod:`cgcnn.data.descriptors`), one row per crystal in
        ``ids`` order: ``fidelity`` (int), ``pbe`` (eV, NaN = unknown), ``composition``
        ([n, k]).  Returns ``self``."""
        for name, values in arrays.items():
            if name not in INPUT_DTYPES:
                raise ValueError(f"unknown per-crystal input {name!r}; known: {', '.join(INPUT_DTYPES)}")
            arr = np.ascontiguousarray(values, dtype=INPUT_DTYPES[name])
            if arr.shape[:1] != (len(self),):
                raise ValueError(f"input {name!r} has {arr.shape[:1]} rows for {len(self)} crystals")
            self.inputs[name] = arr
        return self

    def _usable(self, graphs: GraphSet, m: str, features, on_error: OnError) -> bool:
        """Whether material ``m`` has a graph whose elements the feature table covers."""
        if m not in graphs:
            _report(self.problems, Problem(m, "no crystal graph (structure missing or skipped)"), on_error)
            return False
        bad = [int(x) for x in np.unique(graphs[m].atomic_numbers) if not features.supports(int(x))]
        if bad:
            from pymatgen.core import Element

            names = ", ".join(f"{Element.from_Z(b).symbol} (Z={b})" for b in bad)
            _report(self.problems, Problem(m, f"element(s) outside the atom-feature table: {names}"), on_error)
            return False
        return True

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_atoms(self) -> int:
        return int(self._node_counts.sum())

    def subset_positions(self, positions: Sequence[int]) -> CrystalDataset:
        ids = [self.ids[k] for k in positions]
        targets = None if self.y is None else {m: float(self.y[k]) for m, k in zip(ids, positions)}
        sub = CrystalDataset(
            self.graphs, targets, self.features, ids=ids, label_range=(None, None)
        )  # labels already checked
        return sub.with_inputs(**{k: v[np.asarray(positions, dtype=np.int64)] for k, v in self.inputs.items()})

    @classmethod
    def concat(cls, parts: Sequence[tuple[CrystalDataset, str]]) -> CrystalDataset:
        """One labelled dataset from several, ids suffixed ``<id>@<tag>`` (the same material
        may appear in several parts, e.g. with a PBE and an experimental label); per-crystal
        inputs are concatenated (every part must carry the same ones)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0][0]
        names = set(first.inputs)
        for ds, tag in parts:
            if ds.y is None:
                raise DatasetError(f"part {tag!r} has no labels")
            if set(ds.inputs) != names:
                raise ValueError(f"part {tag!r} carries inputs {sorted(ds.inputs)}, the first part {sorted(names)}")
            if ds.features != first.features or ds.config != first.config:
                raise ValueError(f"part {tag!r} uses other atom features or graph settings than the first part")
        graphs = GraphSet(
            [f"{m}@{tag}" for ds, tag in parts for m in ds.graphs.ids],
            np.concatenate([ds.graphs.atomic_numbers for ds, _ in parts]),
            _stack_ptrs([ds.graphs.node_ptr for ds, _ in parts]),
            np.concatenate([ds.graphs.edge_index for ds, _ in parts], axis=1),
            np.concatenate([ds.graphs.distances for ds, _ in parts]),
            _stack_ptrs([ds.graphs.edge_ptr for ds, _ in parts]),
            first.config,
        )
        targets = list(zip(graphs.ids, np.concatenate([ds.y for ds, _ in parts]).tolist()))
        out = cls(graphs, targets, first.features, label_range=(None, None))
        return out.with_inputs(**{k: np.concatenate([ds.inputs[k] for ds, _ in parts]) for k in names})


def _stack_ptrs(ptrs: Sequence[np.ndarray]) -> np.ndarray:
    """Offsets of concatenated packed arrays: [0, a1, a2, …] + [0, b1, …] → [0, a1, a2, …, a_n + b1, …]."""
    out, shift = [np.zeros(1, np.int64)], 0
    for p in ptrs:
        out.append(np.asarray(p[1:], dtype=np.int64) + shift)
        shift += int(p[-1])
    return np.concatenate(out)
