"""Is this a crystal a graph can be built from?  Cheap physical checks before the graph.

A structure read from a file can be impossible — a cell given in nm as if in Å, two atoms on
top of each other, a dummy atom — and an impossible cell can make the neighbour search take
minutes and gigabytes.  :func:`structure_problem` refuses such a structure with one sentence
that says why, with the numbers, before any neighbour search over the graph radius runs:

* the lattice and every coordinate are finite numbers, and the cell has a volume;
* every site is an ordered real element (no dummy species such as ``X``; partial occupancy
  is reported with its digits);
* the volume per atom is at least :data:`MIN_VOLUME_PER_ATOM` (the densest solids have about
  5 Å³ per atom: diamond 5.7) and at most :data:`MAX_VOLUME_PER_ATOM` (a molecule alone in a box
  of 20 Å has 8,000);
* no two atoms — nor an atom and its own periodic image — are closer than
  :data:`MIN_DISTANCE` (the shortest bond in nature, H–H, is 0.74 Å);
* the graph radius holds at most :data:`MAX_NEIGHBOURS` atoms around an atom on average
  (number density × sphere volume), which bounds the memory of the neighbour search.
"""

from __future__ import annotations

import math

import numpy as np

MIN_DISTANCE = 0.5  # Å
MIN_VOLUME_PER_ATOM = 2.0  # Å^3
MAX_VOLUME_PER_ATOM = 20_000.0  # Å^3
MAX_NEIGHBOURS = 2_000  # atoms within the graph radius, on average


def _species(site) -> str:
    return ", ".join(f"{sp} {occ:.6g}" for sp, occ in site.species.items())


def structure_problem(structure, radius: float) -> str | None:
    """Why ``structure`` (a pymatgen Structure) cannot be a crystal graph of ``radius`` Å, or None."""
    from pymatgen.core import DummySpecies

    matrix = np.asarray(structure.lattice.matrix, dtype=float)
    if not np.isfinite(matrix).all():
        return "the lattice has a value that is not a finite number"
    n = len(structure)
    if n == 0:
        return "the structure has no atoms"
    frac = np.asarray(structure.frac_coords, dtype=float)
    if not np.isfinite(frac).all():
        bad = int(np.flatnonzero(~np.isfinite(frac).all(axis=1))[0])
        return f"site {bad} has a coordinate that is not a finite number"
    volume = abs(float(np.linalg.det(matrix)))
    if not volume > 1e-12:
        lengths = ", ".join(f"{x:.4g}" for x in np.linalg.norm(matrix, axis=1))
        return f"the cell has no volume (lattice vector lengths {lengths} Å)"
    for i, site in enumerate(structure):
        for sp in site.species:
            if isinstance(sp, DummySpecies) or getattr(sp, "Z", 0) < 1:
                return f"site {i} is not a real element ({sp}); replace the dummy atom or remove it"
        if not site.is_ordered:
            return f"site {i} is partially occupied ({_species(site)})"
    per_atom = volume / n
    if per_atom < MIN_VOLUME_PER_ATOM:
        return (
            f"the volume per atom is {per_atom:.3g} Å³, below {MIN_VOLUME_PER_ATOM:g} Å³ (no solid is that dense; "
            "are the cell lengths in Å?)"
        )
    if per_atom > MAX_VOLUME_PER_ATOM:
        return f"the volume per atom is {per_atom:.3g} Å³, above {MAX_VOLUME_PER_ATOM:g} Å³ (not a crystal)"
    neighbours = n / volume * 4.0 / 3.0 * math.pi * radius**3
    if neighbours > MAX_NEIGHBOURS:
        return f"{neighbours:.0f} atoms would lie within {radius:g} Å of each atom (at most {MAX_NEIGHBOURS})"
    shortest = float(min(np.linalg.norm(structure.lattice.get_lll_reduced_lattice().matrix, axis=1)))
    if shortest < MIN_DISTANCE:
        return f"each atom is {shortest:.3g} Å from its own periodic image (at least {MIN_DISTANCE:g} Å expected)"
    close = _closest_pair(structure)
    if close is not None:
        i, j, d = close
        return f"shortest distance {d:.3g} Å between sites {i} and {j} (at least {MIN_DISTANCE:g} Å expected)"
    return None


def _closest_pair(structure) -> tuple[int, int, float] | None:
    """The closest pair of sites nearer than :data:`MIN_DISTANCE` (periodic images included), or None."""
    centres, points, _, distances = structure.get_neighbor_list(MIN_DISTANCE, numerical_tol=1e-8)
    keep = distances > 1e-8
    if (~keep).any():  # two sites at the very same position
        k = int(np.flatnonzero(~keep & (centres != points))[0]) if (~keep & (centres != points)).any() else None
        if k is not None:
            return int(min(centres[k], points[k])), int(max(centres[k], points[k])), 0.0
    if not keep.any():
        return None
    k = int(np.argmin(np.where(keep, distances, np.inf)))
    return int(min(centres[k], points[k])), int(max(centres[k], points[k])), float(distances[k])
