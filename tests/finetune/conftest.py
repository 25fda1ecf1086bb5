"""A lab made from the bundled fixture: its 43 Materials Project structures (the fixture's
snapshot) with gaps derived from the shipped ensemble's own zero-shot predictions, so the right
verdict is known in advance."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

SNAPSHOT = Path(__file__).resolve().parents[1] / "fixtures" / "mp_snapshot" / "summary.jsonl.gz"
FAST = {"recipes": ["recalibrated", "residual_trees"], "n_boot": 500}  # no network fits


@pytest.fixture(scope="session")
def records() -> dict:
    """material_id -> the fixture snapshot's record."""
    with gzip.open(SNAPSHOT, "rt") as fh:
        return {r["material_id"]: r for r in map(json.loads, fh)}


@pytest.fixture(scope="session")
def zero_shot(records) -> pd.DataFrame:
    """The shipped ensemble's predictions for the fixture's structures (its own PBE gaps given)."""
    from cgcnn import load_model

    return load_model(device="cpu").predict(str(SNAPSHOT))


def write_lab(path: Path, zero_shot: pd.DataFrame, records: dict, offset: float = 0.0) -> Path:
    """A lab table: gaps = zero-shot + ``offset``, with the snapshot's PBE gaps."""
    pbe = [records[m]["band_gap"] for m in zero_shot["material_id"]]
    table = pd.DataFrame(
        {
            "material_id": zero_shot["material_id"],
            "bg_exp": zero_shot["prediction_ev"] + offset,
            "pbe_gap_ev": ["" if g is None else g for g in pbe],
        }
    )
    table.to_csv(path, index=False, float_format="%.17g")
    return path
