"""Structure -> crystal graph (pure: no file I/O).

The graph CGCNN convolves over (Xie & Grossman, PRL 120, 145301, 2018): every atom is a
node; every atom is joined to its ``max_neighbors`` nearest neighbours within ``radius``
(periodic images included).  Distances are kept raw; the Gaussian expansion happens in the
model's input step (:func:`cgcnn.data.features.gaussian_expand`), so the cache stays compact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pymatgen.core import Structure

from cgcnn.config import GraphConfig
from cgcnn.errors import CgcnnError


class GraphError(CgcnnError, ValueError):
    """A structure cannot become a graph (the message says why)."""


@dataclass(eq=False)
class CrystalGraph:
    """A crystal graph in edge-list form.

    Shapes:
        atomic_numbers: [N] int64
        edge_index: [2, E] int64 — row 0 the neighbour j (message source), row 1 the
            centre atom i (message target); edges are grouped by centre, nearest first.
        distances: [E] float32 (Å)
    """

    atomic_numbers: np.ndarray
    edge_index: np.ndarray
    distances: np.ndarray
    material_id: str | None = field(default=None)

    @property
    def n_atoms(self) -> int:
        return int(self.atomic_numbers.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.distances.shape[0])

    def neighbour_counts(self) -> np.ndarray:
        return np.bincount(self.edge_index[1], minlength=self.n_atoms)

    def equals(self, other: CrystalGraph) -> bool:
        return (
            np.array_equal(self.atomic_numbers, other.atomic_numbers)
            and np.array_equal(self.edge_index, other.edge_index)
            and np.array_equal(self.distances, other.distances)
        )

    def __repr__(self) -> str:
        return f"CrystalGraph(id={self.material_id!r}, n_atoms={self.n_atoms}, n_edges={self.n_edges})"


def check_structure(structure: Structure) -> None:
    """Raise :class:`GraphError` for structures CGCNN cannot represent."""
    if len(structure) == 0:
        raise GraphError("structure has no sites")
    if not structure.is_ordered:
        bad = next(s for s in structure if not s.is_ordered)
        raise GraphError(f"partial occupancy at site {bad.species_string!r}: disordered structures are not supported")


def structure_to_graph(structure: Structure, cfg: GraphConfig, material_id: str | None = None) -> CrystalGraph:
    """Build the radius graph CGCNN convolves over.

    Each atom keeps its ``cfg.max_neighbors`` nearest neighbours within ``cfg.radius`` (Å),
    periodic images included, found with pymatgen's compiled neighbour search (the one
    behind ``Structure.get_neighbor_list``: one call per structure, no per-atom loop).
    Neighbours are ordered by distance with a *stable* sort over the search's own order,
    so equal distances at the cut are broken exactly as the original implementation
    (Python's stable ``sorted`` over ``get_all_neighbors``, which runs the same search)
    broke them.

    Difference from the original: an atom with fewer than ``max_neighbors`` neighbours
    keeps only the neighbours it has.  The original padded the list with atom 0 at
    distance ``radius + 1``, which sent fake messages from atom 0; here no padding edge
    exists, so no fake message is sent (the sum runs over real neighbours only).

    Raises:
        GraphError: empty or disordered structure, or an atom with no neighbour within
            the radius (such an atom would never receive a message).

    Returns:
        CrystalGraph with ``atomic_numbers`` [N], ``edge_index`` [2, E] and ``distances`` [E].
    """
    check_structure(structure)
    n = len(structure)
    centers, neighbors, dists = neighbor_list(structure, cfg.radius)
    counts = np.bincount(centers, minlength=n)
    if (counts == 0).any():
        lonely = int(np.flatnonzero(counts == 0)[0])
        raise GraphError(f"atom {lonely} ({structure[lonely].species_string}) has no neighbour within {cfg.radius} Å")
    sel = nearest_per_centre(centers, dists, counts, cfg.max_neighbors)
    edge_index = np.stack([neighbors[sel], centers[sel]]).astype(np.int64)
    return CrystalGraph(
        atomic_numbers=np.array(structure.atomic_numbers, dtype=np.int64),
        edge_index=edge_index,
        distances=dists[sel].astype(np.float32),
        material_id=material_id,
    )


def neighbor_list(structure: Structure, radius: float, numerical_tol: float = 1e-8):
    """(centre, neighbour, distance) of every pair within ``radius``, periodic images included.

    The same search, with the same arguments and hence the same order, as
    ``Structure.get_neighbor_list`` (pymatgen's compiled ``find_points_in_spheres``),
    without its per-site Python overhead.  Pairs come grouped by centre, ascending.
    """
    try:
        from pymatgen.optimization.neighbors import find_points_in_spheres
    except ImportError:  # pure-Python pymatgen build
        c, nb, _, d = structure.get_neighbor_list(r=radius)
        order = np.argsort(c, kind="stable")
        return c[order], nb[order], d[order]
    coords = np.ascontiguousarray(structure.cart_coords, dtype=float)
    c, nb, _, d = find_points_in_spheres(
        coords,
        coords,
        r=float(radius),
        pbc=np.ascontiguousarray(structure.pbc, dtype=np.int64),
        lattice=np.ascontiguousarray(structure.lattice.matrix, dtype=float),
        tol=numerical_tol,
    )
    keep = ~((c == nb) & (d <= numerical_tol))
    c, nb, d = c[keep], nb[keep], d[keep]
    if len(c) > 1 and (np.diff(c) < 0).any():  # not grouped: group stably by centre
        order = np.argsort(c, kind="stable")
        c, nb, d = c[order], nb[order], d[order]
    return c, nb, d


def nearest_per_centre(centers: np.ndarray, dists: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` nearest pairs of every centre, nearest first.

    ``centers`` must be grouped ascending (as :func:`neighbor_list` returns them).  Each
    centre's distances are laid out in one row of a padded matrix and sorted with a
    *stable* row-wise sort, so equal distances keep the search order.
    """
    n = len(counts)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.arange(len(centers)) - np.repeat(starts, counts)
    table = np.full((n, int(counts.max())), np.inf)
    table[centers, rank] = dists
    order = np.argsort(table, axis=1, kind="stable")[:, :k]
    keep = order < counts[:, None]
    return (starts[:, None] + order)[keep]
