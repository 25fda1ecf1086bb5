"""Partially occupied sites (solid solutions, vacancies) as ordered structures, opt-in.

A CGCNN reads one element per atom, so a structure with partially occupied sites — common in
experimental (ICSD-style) CIFs — has no graph.  Two ways through (``--disorder``; the default
``refuse`` skips such a structure with its occupancies in the message):

``end-members``
    Linear interpolation between end members (Vegard-like, no bowing): the partially occupied
    sites are grouped by their occupancies (one group per set of equivalent sites), each group
    is filled with one of its species in every combination (a vacancy share is left out: the
    species count in their proportions), in the structure's own cell, and the prediction is the occupancy-weighted
    mean over those end members.  A 50/50 solid solution therefore lies between its two end
    members.  At most :data:`MAX_END_MEMBERS` combinations.

``orderings``
    Ordered approximants:

1. the smallest supercell (``m`` copies of the cell along its shortest axis, ``m`` ≤
   :data:`MAX_CELLS`) in which every site's occupancies are whole numbers of atoms
   (within :data:`OCCUPANCY_TOLERANCE`; a site that is then fully occupied by one element, such
   as an occupancy of 0.9999, is simply that element);
2. :data:`ORDERINGS` random orderings (seeded, so a rerun gives the same ones): on the ``m``
   copies of each partially occupied site, the species (and vacancies) in their proportions,
   shuffled;
3. each ordering is checked and built like any structure; the structure's prediction is the
   mean over its orderings, its spread combines the models' spread and the orderings'.

They keep the local environments of a solid solution (an A atom next to a B atom), which the
end members lack, but a network's prediction for them need not lie between the end members'.

Either way the spread of a structure's prediction is that of the mixture (the models' spread
and the spread over its ordered structures), and the output names the method used.
"""

from __future__ import annotations

import numpy as np

ORDERINGS = 8
MAX_CELLS = 8
MAX_END_MEMBERS = 16
METHODS = ("refuse", "end-members", "orderings")
OCCUPANCY_TOLERANCE = 0.02
MARK = "#ordered-"  # id of an ordered structure standing for a disordered one: <id>#ordered-<k>


class DisorderError(ValueError):
    """A structure whose occupancies no supercell of at most :data:`MAX_CELLS` cells makes whole."""


def _multiplier(occupancies: list[list[float]]) -> int:
    for m in range(1, MAX_CELLS + 1):
        if all(abs(o * m - round(o * m)) <= OCCUPANCY_TOLERANCE * m for site in occupancies for o in site):
            return m
    raise DisorderError(
        f"no supercell of up to {MAX_CELLS} cells makes the occupancies whole numbers of atoms "
        f"(occupancies {sorted({round(o, 4) for site in occupancies for o in site})})"
    )


def ordered_approximants(structure, *, n: int = ORDERINGS, seed: int = 0):
    """(orderings as ordered pymatgen Structures, a description of the method) of a structure
    with partially occupied sites (see the module docstring)."""
    from pymatgen.core import Structure

    sites = list(structure)
    occupancies = []
    for site in sites:
        occ = [float(v) for v in site.species.values()]
        occupancies.append([*occ, max(0.0, 1.0 - sum(occ))])  # the last: vacancy
    m = _multiplier([o for o, s in zip(occupancies, sites) if not s.is_ordered])
    axis = int(np.argmin(structure.lattice.abc))
    scale = [1, 1, 1]
    scale[axis] = m
    lattice = structure.lattice.matrix * np.array(scale)[:, None]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        species, coords = [], []
        for site, occ in zip(sites, occupancies):
            names = [*site.species.keys(), None]
            counts = [round(o * m) for o in occ]
            if sum(counts) != m:  # rounding within tolerance: give the remainder to the largest share
                counts[int(np.argmax(occ))] += m - sum(counts)
            pool = [names[k] for k, c in enumerate(counts) for _ in range(c)]
            if not site.is_ordered:
                rng.shuffle(pool)
            for copy, sp in enumerate(pool):
                if sp is None:
                    continue
                frac = np.array(site.frac_coords, dtype=float)
                frac[axis] = (frac[axis] + copy) / m
                species.append(sp)
                coords.append(frac)
        out.append(Structure(lattice, species, coords))
    return out, f"mean over {n} orderings in a {m}-cell supercell"


def end_members(structure):
    """(ordered structures, their weights, a description) of a structure with partially
    occupied sites, by linear interpolation between end members (see the module docstring)."""
    import itertools

    from pymatgen.core import Structure

    groups: dict[tuple, list[int]] = {}
    for i, site in enumerate(structure):
        if not site.is_ordered:
            key = tuple(sorted((str(sp), round(float(o), 6)) for sp, o in site.species.items()))
            groups.setdefault(key, []).append(i)
    choices = []
    for key in groups:
        total = sum(o for _, o in key)  # a vacancy share is left out: the species in their proportions
        choices.append([(sp, o / total) for sp, o in key])
    combos = list(itertools.product(*choices))
    if len(combos) > MAX_END_MEMBERS:
        raise DisorderError(
            f"{len(combos)} end members (at most {MAX_END_MEMBERS}): too many kinds of partially occupied sites"
        )
    fixed = {i: None for members in groups.values() for i in members}
    out, weights = [], []
    for combo in combos:
        pick = dict(fixed)
        weight = 1.0
        for members, (sp, w) in zip(groups.values(), combo):
            weight *= w
            for i in members:
                pick[i] = sp
        species, coords = [], []
        for i, site in enumerate(structure):
            sp = site.species.elements[0] if i not in pick else pick[i]
            if sp is None:
                continue
            species.append(sp)
            coords.append(site.frac_coords)
        out.append(Structure(structure.lattice, species, coords))
        weights.append(weight)
    return out, weights, f"occupancy-weighted mean over {len(out)} end members"


def ordered_structures(structure, method: str):
    """(ordered structures, weights summing to 1, a description) that stand for a structure
    with partially occupied sites under ``method`` (``end-members`` or ``orderings``)."""
    if method == "end-members":
        return end_members(structure)
    if method == "orderings":
        out, how = ordered_approximants(structure)
        return out, [1.0 / len(out)] * len(out), how
    raise ValueError(f"unknown disorder method {method!r}; choose from {', '.join(METHODS)}")
