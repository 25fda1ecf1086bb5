"""A fast reader for the simple CIFs that pymatgen and the Materials Project write.

Parsing dominates graph building: pymatgen's general ``CifParser`` spends ~10 ms on a
typical Materials Project CIF.  Those files are all alike — one data block, space group
P1 with the single operation ``x, y, z``, one ``_atom_site`` loop of element symbols,
fractional coordinates and unit occupancies — and for them this reader builds the very
same :class:`~pymatgen.core.Structure` about ten times faster.  "The very same" means it
follows ``CifParser``'s own steps for such files: lattice from the six cell parameters
(``Lattice.from_parameters``), coordinates within 1e-4 (relative) of 1/3 or 2/3 snapped to
those values, coordinates wrapped into [0, 1), sites grouped by species in
electronegativity order (``get_sorted_structure``) with file order kept inside a group.

Anything else — symmetry operations beyond the identity, partial occupancies, oxidation
states, text fields, several blocks, sites closer than 1e-4 in fractional coordinates —
is *declined* (``None``), and the caller falls back to pymatgen's parser.
"""

from __future__ import annotations

import math
import re
import shlex

import numpy as np

_PLAIN_SYMBOL = re.compile(r"^[A-Z][a-z]?$")
_UNCERTAINTY = re.compile(r"\(\d*\)$")
_IDEAL_FRACTIONS = (1 / 3, 2 / 3)
_SITE_TOLERANCE = 1e-4
_FRAC_TOLERANCE = 1e-4
_IDENTITY = {"x,y,z", "+x,+y,+z"}


def _number(text: str) -> float | None:
    text = _UNCERTAINTY.sub("", text.strip())
    try:
        return float(text)
    except ValueError:
        return None


def _tokens(line: str) -> list[str] | None:
    if "'" not in line and '"' not in line:
        return line.split()
    try:
        return shlex.split(line, posix=True)
    except ValueError:
        return None


def _read_blocks(text: str) -> tuple[dict[str, str], list[tuple[list[str], list[list[str]]]]] | None:
    """Key/value pairs and loops of a single-block CIF, or None for anything unusual."""
    items: dict[str, str] = {}
    loops: list[tuple[list[str], list[list[str]]]] = []
    blocks = 0
    lines = text.splitlines()
    k = 0
    while k < len(lines):
        line = lines[k].strip()
        k += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith(";"):
            return None  # multi-line text field
        if line.lower().startswith("data_"):
            blocks += 1
            if blocks > 1:
                return None
            continue
        if line.lower() == "loop_":
            keys: list[str] = []
            while k < len(lines) and lines[k].strip().startswith("_"):
                keys.append(lines[k].strip().split()[0].lower())
                k += 1
            values: list[str] = []
            while k < len(lines):
                row = lines[k].strip()
                if not row or row.startswith("#"):
                    k += 1
                    continue
                if row.startswith("_") or row.lower() == "loop_" or row.lower().startswith("data_"):
                    break
                if row.startswith(";"):
                    return None
                toks = _tokens(row)
                if toks is None:
                    return None
                values += toks
                k += 1
            if not keys or len(values) % len(keys):
                return None
            width = len(keys)
            loops.append((keys, [values[i : i + width] for i in range(0, len(values), width)]))
            continue
        if line.startswith("_"):
            toks = _tokens(line)
            if toks is None or len(toks) != 2:
                return None
            items[toks[0].lower()] = toks[1]
            continue
        return None
    return (items, loops) if blocks == 1 else None


def read_simple_cif(text: str):
    """The Structure pymatgen's ``CifParser`` would build, or ``None`` to decline.

    Longer than 80 lines on purpose: each early ``return None`` is one condition under which
    pymatgen's parser would do something this reader does not, kept in one readable list.
    """
    from pymatgen.core import Lattice, Structure
    from pymatgen.core.periodic_table import Element

    parsed = _read_blocks(text)
    if parsed is None:
        return None
    items, loops = parsed
    if any(k.startswith(("_atom_type_oxidation", "_atom_site_moment", "_atom_site_attached")) for k in items):
        return None

    symops: list[str] | None = None
    sites: dict[str, list[str]] | None = None
    for keys, rows in loops:
        if any(
            k.startswith(("_atom_type_oxidation", "_atom_site_moment", "_atom_site_aniso", "_atom_site_attached"))
            for k in keys
        ):
            return None
        if "_symmetry_equiv_pos_as_xyz" in keys or "_space_group_symop_operation_xyz" in keys:
            col = keys.index(
                "_symmetry_equiv_pos_as_xyz"
                if "_symmetry_equiv_pos_as_xyz" in keys
                else "_space_group_symop_operation_xyz"
            )
            symops = [r[col] for r in rows]
        elif "_atom_site_fract_x" in keys:
            if sites is not None:
                return None
            sites = {k: [r[i] for r in rows] for i, k in enumerate(keys)}
    if symops is None or sites is None:
        return None
    if len(symops) != 1 or symops[0].replace(" ", "").lower() not in _IDENTITY:
        return None
    if "_atom_site_type_symbol" not in sites:
        return None

    cell = [_number(items.get(f"_cell_length_{x}", "?")) for x in "abc"]
    cell += [_number(items.get(f"_cell_angle_{x}", "?")) for x in ("alpha", "beta", "gamma")]
    if any(v is None for v in cell):
        return None

    symbols = sites["_atom_site_type_symbol"]
    if not all(_PLAIN_SYMBOL.match(s) for s in symbols):
        return None
    if "_atom_site_occupancy" in sites:
        occ = [_number(o) for o in sites["_atom_site_occupancy"]]
        if any(o is None or o != 1.0 for o in occ):
            return None
    coords = []
    for axis in ("x", "y", "z"):
        col = []
        for raw in sites[f"_atom_site_fract_{axis}"]:
            v = _number(raw)
            if v is None:
                return None
            for ideal in _IDEAL_FRACTIONS:
                if math.isclose(v / ideal, 1, abs_tol=_FRAC_TOLERANCE, rel_tol=0):
                    v = float(str(ideal))
            col.append(v)
        coords.append(col)
    frac = np.array(coords, dtype=float).T
    frac = frac - np.floor(frac)

    # CifParser merges sites closer than its tolerance; decline rather than imitate.
    diff = frac[:, None, :] - frac[None, :, :]
    diff -= np.round(diff)
    close = np.all(np.abs(diff) < _SITE_TOLERANCE, axis=2)
    np.fill_diagonal(close, False)
    if close.any():
        return None
    try:
        elements = {s: Element(s) for s in set(symbols)}
    except ValueError:
        return None

    lattice = Lattice.from_parameters(*cell)
    if min(lattice.d_hkl(h) for h in ((1, 0, 0), (0, 1, 0), (0, 0, 1))) < 0.01:
        return None
    # CifParser groups sites by species and returns ``get_sorted_structure()``: a stable sort
    # by (electronegativity, symbol).  For one element per site that is exactly this key,
    # with file order kept within an element.  Undefined electronegativity: decline.
    negativity = {s: el.X for s, el in elements.items()}
    if any(not math.isfinite(x) for x in negativity.values()):
        return None
    order = sorted(range(len(symbols)), key=lambda i: (negativity[symbols[i]], symbols[i]))
    return Structure(lattice, [elements[symbols[i]] for i in order], frac[order])
