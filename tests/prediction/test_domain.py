"""Applicability domain (cgcnn.prediction.domain): each rule flags what it says and names why."""

import numpy as np
from pymatgen.core import Lattice, Structure

from cgcnn.config import GraphConfig
from cgcnn.data.building import build_graphs
from cgcnn.data.material_classes import anion_class
from cgcnn.prediction.domain import Domain, FeatureSpace, element_counts, element_sets, formulas


def _domain(reference: np.ndarray, threshold: float = 1.0) -> Domain:
    return Domain(FeatureSpace.fit(reference), threshold, {"Na": 10, "Cl": 10, "Tc": 1}, min_count=5, max_gap_ev=5.0)


def test_element_sets_and_counts_of_real_graphs():
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cscl = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    graphs, problems = build_graphs(
        [("nacl", nacl), ("cscl", cscl)], GraphConfig(radius=5.0, max_neighbors=8), progress=False
    )
    assert not problems
    sets = element_sets(graphs)
    assert sets == [frozenset({"Na", "Cl"}), frozenset({"Cs", "Cl"})]
    assert element_counts(sets) == {"Cl": 2, "Cs": 1, "Na": 1}
    # site counts by atomic number: the conventional rock-salt cell holds 4 NaCl units, CsCl's cell one
    assert formulas(graphs) == ["Na4Cl4", "Cl1Cs1"]
    assert [anion_class(f) for f in formulas(graphs)] == ["halide", "halide"]


def test_nearest_neighbour_distance_is_measured_in_standardised_features():
    space = FeatureSpace.fit(np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 20.0], [2.0, 20.0]]))  # std 1 and 10
    assert np.allclose(space.distances(np.array([[1.0, 0.0], [0.0, 30.0]])), [1.0, 1.0])


def test_each_rule_flags_and_names_its_reason():
    ref = np.zeros((10, 2))
    ref[:, 0] = np.arange(10)
    d = _domain(ref, threshold=1.0)
    feats = np.array([[4.0, 0.0], [4.0, 0.0], [4.0, 40.0], [4.0, 0.0], [4.0, 0.0], [4.0, 0.0]])
    elements = [frozenset({"Na", "Cl"}), frozenset({"Tc", "Cl"}), frozenset({"Na", "Cl"})] + [
        frozenset({"Na", "Cl"})
    ] * 3
    pred = np.array([2.0, 2.0, 2.0, 2.0, 0.02, 6.0])
    source = ["given", "given", "given", "predicted", "given", "given"]
    inside, notes, cats, dist = d.assess(feats, elements, pred, source)
    assert inside.tolist() == [True, False, False, False, False, False]
    assert notes[0] == "" and cats[0] == "in_domain" and dist[0] == 0.0
    assert "rare element Tc (1 training materials) (< 5)" in notes[1]
    assert "far from the training crystals" in notes[2]
    assert notes[3] == "PBE gap predicted, none given" and cats[3] == "pbe_predicted"
    assert "below 0.1 eV (perhaps a metal)" in notes[4] and "above the training range (max 5 eV)" in notes[5]
    assert cats[1] == cats[2] == cats[4] == cats[5] == "out_of_domain"


def test_an_unknown_element_counts_as_zero_training_materials():
    d = _domain(np.zeros((3, 2)) + np.arange(3)[:, None])
    inside, notes, _, _ = d.assess(np.ones((1, 2)), [frozenset({"Og"})], np.array([1.0]))
    assert not inside[0] and "Og (0 training materials)" in notes[0]


def test_known_distances_are_used_as_given():
    d = _domain(np.zeros((3, 2)) + np.arange(3)[:, None], threshold=1.0)
    feats = np.zeros((1, 2))  # on a reference point ...
    inside, notes, _, dist = d.assess(feats, [frozenset({"Na"})], np.array([1.0]), distances=np.array([5.0]))
    assert dist[0] == 5.0 and not inside[0] and "far from the training crystals" in notes[0]  # ... but told it is far


def test_a_given_pbe_gap_beyond_the_training_pbe_range_is_out_of_domain_and_zero_is_not():
    d = _domain(np.zeros((3, 2)) + np.arange(3)[:, None], threshold=10.0)
    d.max_pbe_ev = 4.0
    feats = np.zeros((4, 2))
    elements = [frozenset({"Na", "Cl"})] * 4
    pred = np.array([1.5, 1.5, 1.5, 1.5])
    source = ["given", "given", "given", "predicted"]
    pbe = np.array([0.0, 4.5, 1.0, 4.5])  # metal in PBE, beyond the training PBE gaps, ordinary, predicted
    inside, notes, cats, _ = d.assess(feats, elements, pred, source, pbe_gaps=pbe)
    assert inside.tolist() == [True, False, True, False]  # a PBE gap of 0 alone is no reason (see the docstring)
    assert notes[1] == "PBE gap given above the training range (max 4 eV)" and cats[1] == "out_of_domain"
    assert notes[3] == "PBE gap predicted, none given" and cats[3] == "pbe_predicted"  # one reason, not two


def test_the_pbe_range_rule_is_off_for_a_calibration_saved_without_them():
    d = _domain(np.zeros((3, 2)) + np.arange(3)[:, None], threshold=10.0)
    old = d.to_dict()
    old.pop("max_pbe_ev")
    restored = Domain.from_dict(old, d.space)
    assert restored.max_pbe_ev is None
    inside, _, _, _ = restored.assess(
        np.zeros((1, 2)), [frozenset({"Na"})], np.array([1.0]), ["given"], pbe_gaps=np.array([99.0])
    )
    assert inside[0]
    d.max_pbe_ev = 6.3
    assert Domain.from_dict(d.to_dict(), d.space).max_pbe_ev == 6.3
