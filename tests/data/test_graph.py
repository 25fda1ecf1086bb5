"""Crystal graphs (cgcnn.data.graph) and graph settings (cgcnn.config.GraphConfig): neighbour
shells of textbook crystals checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from pymatgen.core import Lattice, Structure

from cgcnn.config import GraphConfig
from cgcnn.data.graph import GraphError, structure_to_graph

A_CSCL, A_NACL, A_SI = 4.12, 5.64, 5.43


def neighbours_of(graph, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(neighbour indices, distances) of centre atom ``i``, in edge order."""
    mine = graph.edge_index[1] == i
    return graph.edge_index[0, mine], graph.distances[mine]


# -- CsCl: 8 nearest neighbours at a√3/2 ---------------------------------------------------


def test_cscl_has_eight_nearest_neighbours(cscl):
    graph = structure_to_graph(cscl, GraphConfig(radius=3.8, max_neighbors=12))
    assert graph.edge_index.shape == (2, 16)  # 8 Cl around Cs, 8 Cs around Cl
    assert graph.edge_index.dtype == np.int64 and graph.distances.dtype == np.float32
    assert np.allclose(graph.distances, A_CSCL * 3**0.5 / 2, atol=1e-5)
    assert graph.neighbour_counts().tolist() == [8, 8]
    # every neighbour of Cs (atom 0) is a Cl image (atom 1) and vice versa
    assert set(neighbours_of(graph, 0)[0].tolist()) == {1}
    assert set(neighbours_of(graph, 1)[0].tolist()) == {0}
    assert graph.atomic_numbers.tolist() == [55, 17]


def test_cscl_eight_kept_out_of_a_larger_sphere_are_the_nearest(cscl):
    # radius 8 holds 8 at a√3/2 = 3.57, 6 at a = 4.12, 12 at a√2 = 5.83, ...: keeping 8
    # must keep exactly the first shell.
    graph = structure_to_graph(cscl, GraphConfig(radius=8, max_neighbors=8))
    assert graph.neighbour_counts().tolist() == [8, 8]
    assert np.allclose(graph.distances, A_CSCL * 3**0.5 / 2, atol=1e-5)


# -- NaCl: 6 at a/2, then 12 at a/√2 ------------------------------------------------------


def test_nacl_first_shell_is_six_at_half_a(nacl):
    graph = structure_to_graph(nacl, GraphConfig(radius=3.0, max_neighbors=12))
    assert len(nacl) == 8
    assert graph.neighbour_counts().tolist() == [6] * 8
    assert np.allclose(graph.distances, A_NACL / 2, atol=1e-5)
    z = graph.atomic_numbers
    # the first shell is all of the other species
    assert (z[graph.edge_index[0]] != z[graph.edge_index[1]]).all()


def test_nacl_keeps_six_at_half_a_and_six_of_the_twelve_at_a_over_root_two(nacl):
    graph = structure_to_graph(nacl, GraphConfig(radius=8, max_neighbors=12))
    assert graph.edge_index.shape == (2, 8 * 12)
    z = graph.atomic_numbers
    for i in range(len(nacl)):
        nbrs, d = neighbours_of(graph, i)
        assert np.allclose(d[:6], A_NACL / 2, atol=1e-5)
        assert np.allclose(d[6:], A_NACL / 2**0.5, atol=1e-5)
        assert (z[nbrs[:6]] != z[i]).all()  # first shell: the other species
        assert (z[nbrs[6:]] == z[i]).all()  # second shell: the same species


def test_nacl_ties_at_the_cut_are_broken_like_the_original(nacl):
    # The original: get_all_neighbors, Python's stable sorted(key=distance), first 12.
    # Six of twelve equidistant second-shell neighbours are kept: which six depends only
    # on the search order, and must be the same six.
    graph = structure_to_graph(nacl, GraphConfig(radius=8, max_neighbors=12))
    for i, found in enumerate(nacl.get_all_neighbors(8)):
        expected = sorted(found, key=lambda n: n.nn_distance)[:12]
        nbrs, d = neighbours_of(graph, i)
        assert nbrs.tolist() == [n.index for n in expected]
        assert np.allclose(d, [n.nn_distance for n in expected], atol=1e-5)


@pytest.mark.parametrize("formula", ["cscl", "nacl", "si"])
def test_edges_grouped_by_centre_and_sorted_by_distance(formula, request):
    structure = request.getfixturevalue(formula)
    graph = structure_to_graph(structure, GraphConfig(radius=6, max_neighbors=12))
    assert (np.diff(graph.edge_index[1]) >= 0).all()  # grouped by centre, ascending
    for i in range(len(structure)):
        _, d = neighbours_of(graph, i)
        assert (np.diff(d) >= 0).all()
    assert graph.distances.max() <= 6


def test_si_has_four_nearest_neighbours_at_a_root_three_over_four(si):
    graph = structure_to_graph(si, GraphConfig(radius=2.5, max_neighbors=12))
    assert graph.neighbour_counts().tolist() == [4, 4]
    assert np.allclose(graph.distances, A_SI * 3**0.5 / 4, atol=1e-5)
    # with 12 allowed inside 4 Å: the 4 bonds then 8 of the 12 at a/√2
    graph = structure_to_graph(si, GraphConfig(radius=4, max_neighbors=12))
    for i in range(2):
        _, d = neighbours_of(graph, i)
        assert np.allclose(d[:4], A_SI * 3**0.5 / 4, atol=1e-5)
        assert np.allclose(d[4:], A_SI / 2**0.5, atol=1e-5)


# -- fewer neighbours than max_neighbors: no padding ---------------------------------------


def test_atom_with_fewer_neighbours_keeps_only_real_ones(h2_in_box):
    graph = structure_to_graph(h2_in_box, GraphConfig(radius=3, max_neighbors=12))
    assert graph.edge_index.tolist() == [[1, 0], [0, 1]]  # one bond each way, nothing padded
    assert np.allclose(graph.distances, 0.74, atol=1e-5)


def test_cscl_in_a_small_sphere_is_not_padded_to_max_neighbors(cscl):
    graph = structure_to_graph(cscl, GraphConfig(radius=3.8, max_neighbors=12))
    assert (graph.neighbour_counts() < 12).all()
    assert (graph.distances <= 3.8).all()  # the original padded at radius + 1
    assert (graph.edge_index[0] != graph.edge_index[1]).all()  # no self edges in CsCl's first shell


# -- errors ---------------------------------------------------------------------------------


def test_atom_without_neighbours_is_an_error_naming_it():
    # H2 at one corner, a lone He atom in the middle of a 12 Å box: He has nothing within 3 Å
    box = Structure(Lattice.cubic(12.0), ["H", "H", "He"], [[0, 0, 0], [0.74 / 12, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(GraphError, match=r"atom 2 \(He\).*no neighbour within 3"):
        structure_to_graph(box, GraphConfig(radius=3, max_neighbors=12))


def test_partial_occupancy_is_an_error():
    disordered = Structure(Lattice.cubic(4.2), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(GraphError, match="partial occupancy"):
        structure_to_graph(disordered, GraphConfig())


def test_graph_error_is_a_value_error():
    assert issubclass(GraphError, ValueError)


# -- graph settings -------------------------------------------------------------------------


def test_default_settings_are_the_original_cgcnn_ones():
    cfg = GraphConfig()
    assert (cfg.radius, cfg.max_neighbors, cfg.dmin, cfg.step) == (8.0, 12, 0.0, 0.2)


@pytest.mark.parametrize(("radius", "n"), [(8, 41), (7, 36), (4, 21)])
def test_gaussian_count_matches_the_original_filter(radius, n):
    # the original: np.arange(dmin, radius + step, step) -> 0, 0.2, ..., radius
    cfg = GraphConfig(radius=radius)
    assert cfg.n_gaussians == n
    assert np.allclose(cfg.centers, 0.2 * np.arange(n))
    assert cfg.centers[0] == 0.0 and np.isclose(cfg.centers[-1], radius)


def test_unknown_graph_setting_is_rejected():
    with pytest.raises(ValidationError, match="foo"):
        GraphConfig(foo=1)


def test_graph_settings_are_validated_and_frozen():
    with pytest.raises(ValidationError):
        GraphConfig(radius=-1)
    with pytest.raises(ValidationError, match="dmin"):
        GraphConfig(radius=2, dmin=3)
    cfg = GraphConfig()
    with pytest.raises(ValidationError):
        cfg.radius = 7  # type: ignore[misc]


def test_settings_key_differs_when_any_setting_differs():
    keys = {
        GraphConfig().key(),
        GraphConfig(radius=7).key(),
        GraphConfig(max_neighbors=14).key(),
        GraphConfig(step=0.1).key(),
    }
    assert len(keys) == 4
