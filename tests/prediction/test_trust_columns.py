"""The trust columns of a shipped ensemble (cgcnn.prediction.trust.add_trust_columns)."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import cgcnn.prediction.trust as trust_module
from cgcnn.prediction.domain import Domain, FeatureSpace
from cgcnn.prediction.intervals import Intervals
from cgcnn.prediction.trust import Trust, add_trust_columns


def _graphs(cells):
    """A stand-in GraphSet: atomic numbers of every crystal's sites, and where each starts."""
    z = np.concatenate([np.asarray(c) for c in cells])
    return SimpleNamespace(atomic_numbers=z, node_ptr=np.cumsum([0] + [len(c) for c in cells]))


def test_the_distance_normaliser_widens_the_interval_of_a_crystal_far_from_the_training_set(monkeypatch):
    reference = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    domain = Domain(FeatureSpace.fit(reference), 100.0, {"Na": 10, "Cl": 10}, 5, 6.0, 0.1, 95.0)
    errors = np.ones(40)  # every calibration error 1 eV at distance 1: score 1 / (1 + 1)
    iv = Intervals.fit(errors, np.zeros(40), ["in_domain"] * 40, "distance", distances=np.ones(40))
    trust = Trust(iv, domain)
    # the crystals' features (standardised by the reference's mean and std): one on a
    # reference point, one far away
    near, far = reference[0], reference[0] + np.array([0.0, 6.0])
    monkeypatch.setattr(trust_module, "crystal_features", lambda *a, **k: np.stack([near, far]))
    table = pd.DataFrame({"prediction_ev": [2.0, 2.0], "pbe_gap_ev": [1.0, 1.0], "pbe_gap_source": ["given"] * 2})
    dataset = SimpleNamespace(graphs=_graphs([[11, 17], [11, 17]]))
    out = add_trust_columns(table, np.zeros(2), dataset, trust, feature_model=None)
    d = domain.space.distances(np.stack([near, far]))
    half = (out["prediction_hi_ev"] - out["prediction_ev"]).to_numpy()  # the lower bound may be clipped at 0
    assert d[0] == pytest.approx(0.0) and d[1] > 1
    assert half.tolist() == pytest.approx([0.5 * (d[0] + 1.0), 0.5 * (d[1] + 1.0)])  # score 0.5 x (d + floor 1)
    assert out["prediction_lo_ev"].tolist() == pytest.approx([1.5, 0.0])
    assert out["in_domain"].tolist() == [True, True]  # the distance threshold (100) is not reached
