"""Labelled (or unlabelled) crystals ready for batching: label checks and :class:`CrystalDataset`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from cgcnn.errors import DatasetError, OnError, Problem
from cgcnn.graphset import GraphSet

log = logging.getLogger(__name__)


def parse_targets(targets: Mapping[str, object] | None, on_error: OnError = "skip") -> tuple[dict[str, float], list[Problem]]:
    """Validate labels: every value must be a finite number (errors name the material)."""
    good: dict[str, float] = {}
    problems: list[Problem] = []
    for m, v in (targets or {}).items():
        try:
            x = float(v)  # type: ignore[arg-type]
            ok = np.isfinite(x)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            p = Problem(str(m), f"label {v!r} is not a finite number")
            if on_error == "error":
                raise DatasetError(str(p))
            log.warning("skipping %s", p)
            problems.append(p)
        else:
            good[str(m)] = x
    return good, problems


class CrystalDataset:
    """Graphs (+ optional targets) ready for batching.

    Materials whose element is missing from the feature table, or whose label is not a
    number, are left out with a warning naming them (``on_error="skip"``) or raise
    (``"error"``).  ``problems`` lists what was left out.
    """

    def __init__(
        self,
        graphs: GraphSet,
        targets: Mapping[str, object] | None,
        features,
        *,
        on_error: OnError = "skip",
        ids: Sequence[str] | None = None,
    ):
        self.features = features
        self.config = graphs.config
        labels, self.problems = parse_targets(targets, on_error)
        wanted = list(ids) if ids is not None else (list(targets) if targets is not None else graphs.ids)
        keep: list[str] = []
        for m in wanted:
            m = str(m)
            if targets is not None and m not in labels:
                continue  # bad label, already reported
            if m not in graphs:
                p = Problem(m, "no crystal graph (structure missing or skipped)")
                if on_error == "error":
                    raise DatasetError(str(p))
                log.warning("skipping %s", p)
                self.problems.append(p)
                continue
            z = graphs[m].atomic_numbers
            bad = [int(x) for x in np.unique(z) if not features.supports(int(x))]
            if bad:
                from pymatgen.core import Element

                names = ", ".join(f"{Element.from_Z(b).symbol} (Z={b})" for b in bad)
                p = Problem(m, f"element(s) outside the atom-feature table: {names}")
                if on_error == "error":
                    raise DatasetError(str(p))
                log.warning("skipping %s", p)
                self.problems.append(p)
                continue
            keep.append(m)
        self.graphs = graphs.subset(keep) if keep != graphs.ids else graphs
        self.ids = list(self.graphs.ids)
        self.y = (
            np.array([labels[m] for m in self.ids], dtype=np.float32) if targets is not None else None
        )
        self._node_counts = np.diff(self.graphs.node_ptr)
        self._edge_counts = np.diff(self.graphs.edge_ptr)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_atoms(self) -> int:
        return int(self._node_counts.sum())

    def subset_positions(self, positions: Sequence[int]) -> "CrystalDataset":
        ids = [self.ids[k] for k in positions]
        targets = None if self.y is None else {m: float(self.y[k]) for m, k in zip(ids, positions)}
        return CrystalDataset(self.graphs, targets, self.features, ids=ids)
