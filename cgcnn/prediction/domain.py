"""Applicability domain: is a crystal like the experimental gaps the model learnt from?

A crystal is **out of domain** (``in_domain = False``) when any of these holds, and
``domain_note`` says which (``"; "``-separated; empty in domain):

* it holds an element found in fewer than ``min_count`` training materials (DS2);
* it is far from every training material in the base model's crystal-feature space: the
  distance to its nearest neighbour (standardised features of M1's last convolution layer,
  the representation the ensemble's CGCNNs start from) is above ``distance_threshold`` — the
  ``percentile``-th percentile of the training materials' own out-of-fold nearest-neighbour
  distances;
* its PBE gap had to be predicted (none was given): the ensemble's largest input error;
* its given PBE gap is above the largest training PBE gap (``max_pbe_ev``: the correction
  would be extrapolated);
* its predicted gap is near zero (below ``near_zero_ev``: perhaps a metal, which the model
  cannot tell) or above the largest training gap.

A given PBE gap near zero (a metal in PBE) is *not* a rule: on DS2 (run ship-8) the 72
materials with a PBE gap below 0.1 eV had out-of-fold MAE 0.372 eV (grouped) / 0.404 eV
(chemistry shift), no worse than the rest (0.365 / 0.414), and flagging them lowered the
in-domain coverage without separating errors any better.

The same rules give each crystal its calibration *category* for the intervals
(:mod:`cgcnn.prediction.intervals`): ``pbe_predicted``, else ``in_domain`` or ``out_of_domain``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from pymatgen.core import Element

IN_DOMAIN, OUT_OF_DOMAIN, PBE_PREDICTED = "in_domain", "out_of_domain", "pbe_predicted"
# Each rule's name -> how its reason starts in ``domain_note`` (what a table of reasons counts).
RULE_NOTES = {
    "rare element": "rare element",
    "far from the training crystals": "far from the training crystals",
    "PBE gap predicted": "PBE gap predicted",
    "given PBE gap above the training range": "PBE gap given above the training range",
    "predicted gap near zero": "predicted gap below",
    "predicted gap above the training range": "predicted gap above the training range",
}


def _site_counts(graphs) -> list[dict[str, int]]:
    """Element symbol -> number of sites, for every crystal of a graph set (by atomic number)."""
    symbols = {int(z): Element.from_Z(int(z)).symbol for z in np.unique(graphs.atomic_numbers)}
    ptr = np.asarray(graphs.node_ptr)
    out = []
    for k in range(len(ptr) - 1):
        z, n = np.unique(graphs.atomic_numbers[ptr[k] : ptr[k + 1]], return_counts=True)
        out.append({symbols[int(e)]: int(c) for e, c in zip(z, n)})
    return out


def element_sets(graphs) -> list[frozenset[str]]:
    """The element symbols of every crystal of a :class:`~cgcnn.data.graphset.GraphSet`."""
    return [frozenset(counts) for counts in _site_counts(graphs)]


def formulas(graphs) -> list[str]:
    """The composition (e.g. ``"Na4Cl4"``, the cell's site counts) of every crystal of a
    :class:`~cgcnn.data.graphset.GraphSet`: what the material class of an interval reads."""
    return ["".join(f"{e}{n}" for e, n in counts.items()) for counts in _site_counts(graphs)]


def element_counts(elements: Iterable[frozenset[str]]) -> dict[str, int]:
    """Element -> number of materials that contain it."""
    counts: dict[str, int] = {}
    for els in elements:
        for e in els:
            counts[e] = counts.get(e, 0) + 1
    return dict(sorted(counts.items()))


@dataclass
class FeatureSpace:
    """Standardised reference features and nearest-neighbour distances to them."""

    mean: np.ndarray
    std: np.ndarray
    reference: np.ndarray  # standardised, [n, d]

    @classmethod
    def fit(cls, features: np.ndarray) -> FeatureSpace:
        x = np.asarray(features, dtype=np.float64)
        mean, std = x.mean(axis=0), x.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        return cls(mean, std, (x - mean) / std)

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Distance of every row of ``features`` to its nearest reference material."""
        from sklearn.neighbors import NearestNeighbors

        q = (np.asarray(features, dtype=np.float64) - self.mean) / self.std
        nn = NearestNeighbors(n_neighbors=1).fit(self.reference)
        return nn.kneighbors(q, return_distance=True)[0][:, 0]


@dataclass
class Domain:
    """The rules of the module docstring with their thresholds."""

    space: FeatureSpace
    distance_threshold: float
    counts: dict[str, int]
    min_count: int = 5
    max_gap_ev: float = 5.0
    near_zero_ev: float = 0.1
    percentile: float = 95.0
    notes: dict = field(default_factory=dict)
    max_pbe_ev: float | None = None  # the largest training PBE gap; None: no PBE-range rule

    def assess(
        self,
        features: np.ndarray,
        elements: Sequence[frozenset[str]],
        predictions: np.ndarray,
        pbe_source: Sequence[str] | None = None,
        distances: np.ndarray | None = None,
        pbe_gaps: np.ndarray | None = None,
    ) -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
        """(in_domain, domain_note, category, nearest-neighbour distance) per crystal;
        ``distances``: the nearest-neighbour distances when they are already known;
        ``pbe_gaps``: the PBE gaps the ensemble read (the PBE-range rule needs them and
        ``max_pbe_ev``; it skips predicted ones, flagged already)."""
        if distances is not None:
            dist = np.asarray(distances, dtype=np.float64)
        else:
            dist = self.space.distances(features) if len(features) else np.zeros(0)
        pred = np.asarray(predictions, dtype=np.float64)
        inside, notes, cats = [], [], []
        for k, els in enumerate(elements):
            why = []
            rare = sorted(e for e in els if self.counts.get(e, 0) < self.min_count)
            if rare:
                why.append(
                    "rare element "
                    + ", ".join(f"{e} ({self.counts.get(e, 0)} training materials)" for e in rare)
                    + f" (< {self.min_count})"
                )
            if dist[k] > self.distance_threshold:
                why.append(
                    f"far from the training crystals (feature distance {dist[k]:.2f} > {self.distance_threshold:.2f})"
                )
            predicted = pbe_source is not None and pbe_source[k] == "predicted"
            if predicted:
                why.append("PBE gap predicted, none given")
            elif pbe_gaps is not None and self.max_pbe_ev is not None and pbe_gaps[k] > self.max_pbe_ev:
                why.append(f"PBE gap given above the training range (max {self.max_pbe_ev:g} eV)")
            if pred[k] < self.near_zero_ev:
                why.append(f"predicted gap below {self.near_zero_ev:g} eV (perhaps a metal)")
            elif pred[k] > self.max_gap_ev:
                why.append(f"predicted gap above the training range (max {self.max_gap_ev:g} eV)")
            inside.append(not why)
            notes.append("; ".join(why))
            cats.append(PBE_PREDICTED if predicted else IN_DOMAIN if not why else OUT_OF_DOMAIN)
        return np.array(inside, dtype=bool), notes, cats, dist

    def to_dict(self) -> dict:
        """Everything but the reference features (saved as arrays by :mod:`cgcnn.prediction.trust`)."""
        return {
            "distance_threshold": self.distance_threshold,
            "counts": self.counts,
            "min_count": self.min_count,
            "max_gap_ev": self.max_gap_ev,
            "near_zero_ev": self.near_zero_ev,
            "percentile": self.percentile,
            "notes": self.notes,
            "max_pbe_ev": self.max_pbe_ev,
        }

    @classmethod
    def from_dict(cls, d: Mapping, space: FeatureSpace) -> Domain:
        return cls(
            space,
            float(d["distance_threshold"]),
            {str(k): int(v) for k, v in d["counts"].items()},
            int(d["min_count"]),
            float(d["max_gap_ev"]),
            float(d["near_zero_ev"]),
            float(d.get("percentile", 95.0)),
            dict(d.get("notes", {})),
            None if d.get("max_pbe_ev") is None else float(d["max_pbe_ev"]),
        )
