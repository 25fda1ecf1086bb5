"""What a shipped ensemble knows about its own reliability: calibrated intervals
(:mod:`cgcnn.prediction.intervals`) and its applicability domain (:mod:`cgcnn.prediction.domain`).

Stored beside the members as ``trust.json`` (interval scores, domain rules and thresholds,
the element counts of the training set, how they were calibrated) and ``domain.npz`` (the
standardised crystal features of the training materials under the feature model, the
ensemble's ``pbe_model`` = M1).  :func:`add_trust_columns` appends ``prediction_lo_ev``,
``prediction_hi_ev``, ``in_domain`` and ``domain_note`` to a prediction table.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cgcnn.data.material_classes import anion_class
from cgcnn.errors import CgcnnError
from cgcnn.fileio import atomic_path, write_json
from cgcnn.prediction.domain import Domain, FeatureSpace, element_sets, formulas
from cgcnn.prediction.inference import embed_dataset
from cgcnn.prediction.intervals import Intervals


class IntervalLevelError(CgcnnError, ValueError):
    """An interval level outside (0, 1)."""


TRUST_FILE, DOMAIN_FILE = "trust.json", "domain.npz"
DEFAULT_LEVEL = 0.9
TRUST_COLUMNS = ["prediction_lo_ev", "prediction_hi_ev", "in_domain", "domain_note"]
FORMAT_VERSION = 1


@dataclass
class Trust:
    """Intervals and domain of one ensemble; ``info``: how they were calibrated (coverage,
    width and in/out-of-domain MAE per protocol), for the model card."""

    intervals: Intervals
    domain: Domain
    level: float = DEFAULT_LEVEL
    info: dict = field(default_factory=dict)

    def save(self, folder: str | os.PathLike) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        space = self.domain.space
        with atomic_path(folder / DOMAIN_FILE) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, mean=space.mean, std=space.std, reference=space.reference.astype(np.float32))
        write_json(
            folder / TRUST_FILE,
            {
                "format_version": FORMAT_VERSION,
                "level": self.level,
                "intervals": self.intervals.to_dict(),
                "domain": self.domain.to_dict(),
                "info": self.info,
            },
        )
        return [folder / TRUST_FILE, folder / DOMAIN_FILE]


def check_level(level: float) -> float:
    """``level`` as a fraction in (0, 1); a clear error otherwise."""
    level = float(level)
    if not 0 < level < 1:
        raise IntervalLevelError(f"interval level {level:g} is not between 0 and 1 (e.g. 0.9 for a 90 % interval)")
    return level


def load_trust(folder: str | os.PathLike) -> Trust | None:
    """The trust files of a model folder, or None when it has none."""
    folder = Path(folder)
    if not (folder / TRUST_FILE).is_file():
        return None
    meta = json.loads((folder / TRUST_FILE).read_text())
    with np.load(folder / DOMAIN_FILE) as z:
        space = FeatureSpace(
            z["mean"].astype(np.float64), z["std"].astype(np.float64), z["reference"].astype(np.float64)
        )
    return Trust(
        Intervals.from_dict(meta["intervals"]),
        Domain.from_dict(meta["domain"], space),
        float(meta.get("level", DEFAULT_LEVEL)),
        dict(meta.get("info", {})),
    )


def crystal_features(feature_model, dataset, *, batch_size: int = 256, device="auto") -> np.ndarray:
    """The feature model's last-convolution crystal features of every crystal of ``dataset``."""
    return embed_dataset(feature_model, dataset, batch_size=batch_size, device=device)[0]


def add_trust_columns(
    table: pd.DataFrame,
    raw_spread: np.ndarray,
    dataset,
    trust: Trust,
    feature_model,
    *,
    level: float | None = None,
    batch_size: int = 256,
    device="auto",
) -> pd.DataFrame:
    """Append :data:`TRUST_COLUMNS` to an ensemble's prediction table (in place; returned)."""
    level = trust.level if level is None else check_level(level)
    features = crystal_features(feature_model, dataset, batch_size=batch_size, device=device)
    source = table["pbe_gap_source"].tolist() if "pbe_gap_source" in table else None
    pbe = table["pbe_gap_ev"].to_numpy(np.float64) if "pbe_gap_ev" in table else None
    inside, notes, cats, distances = trust.domain.assess(
        features, element_sets(dataset.graphs), table["prediction_ev"].to_numpy(), source, pbe_gaps=pbe
    )
    classes = [anion_class(f) for f in formulas(dataset.graphs)] if trust.intervals.min_class_scores else None
    lo, hi = trust.intervals.bounds(table["prediction_ev"].to_numpy(), raw_spread, cats, level, classes, distances)
    table["prediction_lo_ev"] = lo
    table["prediction_hi_ev"] = hi
    table["in_domain"] = inside
    table["domain_note"] = notes
    table.attrs["interval_level"] = level
    return table


__all__ = [
    "DEFAULT_LEVEL",
    "DOMAIN_FILE",
    "TRUST_COLUMNS",
    "TRUST_FILE",
    "IntervalLevelError",
    "Trust",
    "add_trust_columns",
    "check_level",
    "crystal_features",
    "load_trust",
]
