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

Anything else is *declined* (``None``) and the caller falls back to pymatgen's parser, so a
file never means two different structures: symmetry operations beyond the identity, more
than one symmetry loop (pymatgen picks one by its own rules), partial occupancies, oxidation
states, text fields, several blocks, a ``#`` anywhere but at the start of a line (a comment
after a value), sites closer than 1e-4 in fractional coordinates, tags
this reader reads written in another case, a missing ``_atom_site_label``, a number that is not finite (or a
``?`` / ``.``), a cell length that is not positive or an angle outside (0°, 180°), a
``_chemical_formula_sum`` that differs from the sites (pymatgen warns about it), and any
byte-order mark, tab or carriage return without a line feed (pymatgen's tokeniser treats those
its own way; CRLF line ends, as in the Materials Project's files, read the same).
"""

from __future__ import annotations

import math
import re
import shlex

import numpy as np

_PLAIN_SYMBOL = re.compile(r"^[A-Z][a-z]?$")
_LONE_CR = re.compile(r"\r(?!\n)")
_LATE_COMMENT = re.compile(r"^[ ]*[^#\s][^\n]*#", re.MULTILINE)  # a '#' after something else on its line
_FORMULA_TERM = re.compile(r"([A-Z][a-z]?)(\d+(?:\.\d+)?)?")
_UNCERTAINTY = re.compile(r"\(\d*\)$")
_IDEAL_FRACTIONS = (1 / 3, 2 / 3)
_SITE_TOLERANCE = 1e-4
_FRAC_TOLERANCE = 1e-4
_IDENTITY = {"x,y,z", "+x,+y,+z"}
_SYMOP_KEYS = {"_symmetry_equiv_pos_as_xyz", "_space_group_symop_operation_xyz"}
# Tags this reader reads: pymatgen looks them up as written, so ``_ATOM_SITE_FRACT_X`` is not
# ``_atom_site_fract_x`` to it; such a file is declined rather than read differently.
_READ_TAGS = (
    "_atom_site",
    "_atom_type",
    "_cell_length",
    "_cell_angle",
    "_symmetry_equiv",
    "_space_group_symop",
    "_chemical_formula_sum",
)


def _case_differs(tag: str) -> bool:
    """A tag this reader reads, written in another case than pymatgen looks it up."""
    return tag != tag.lower() and tag.lower().startswith(_READ_TAGS)


def _number(text: str) -> float | None:
    """A finite number (an uncertainty in parentheses dropped), or None."""
    text = _UNCERTAINTY.sub("", text.strip())
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _tokens(line: str) -> list[str] | None:
    if "'" not in line and '"' not in line:
        return line.split()
    try:
        return shlex.split(line, posix=True)
    except ValueError:
        return None


def _read_blocks(text: str) -> tuple[dict[str, str], list[tuple[list[str], list[list[str]]]]] | None:
    """Key/value pairs and loops of a single-block CIF, or None for anything unusual."""
    if "\ufeff" in text or "\t" in text or _LONE_CR.search(text) or _LATE_COMMENT.search(text):
        return None  # a '#' after a value starts a comment (or sits in a value): pymatgen's tokeniser decides
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
                key = lines[k].strip().split()[0]
                if _case_differs(key):
                    return None
                keys.append(key)
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
            if toks is None or len(toks) != 2 or toks[0] in items or _case_differs(toks[0]):
                return None
            items[toks[0]] = toks[1]
            continue
        return None
    return (items, loops) if blocks == 1 else None


def read_simple_cif(text: str):
    """The Structure pymatgen's ``CifParser`` would build, or ``None`` to decline (also when
    anything in the file makes this reader fail: pymatgen then reads it, or says why not)."""
    try:
        return _read_simple_cif(text)
    except (ArithmeticError, KeyError, IndexError, ValueError, np.linalg.LinAlgError):
        return None


def _read_simple_cif(text: str):
    """:func:`read_simple_cif` without its guard.

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

    if any(k in _SYMOP_KEYS for k in items):
        return None
    symops: list[str] | None = None
    sites: dict[str, list[str]] | None = None
    for keys, rows in loops:
        if any(
            k.startswith(("_atom_type_oxidation", "_atom_site_moment", "_atom_site_aniso", "_atom_site_attached"))
            for k in keys
        ):
            return None
        if any(k in _SYMOP_KEYS for k in keys):
            if symops is not None or sum(k in _SYMOP_KEYS for k in keys) != 1:
                return None  # two symmetry loops: pymatgen chooses between them by its own rules
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
    if "_atom_site_type_symbol" not in sites or "_atom_site_label" not in sites:
        return None

    cell = [_number(items.get(f"_cell_length_{x}", "?")) for x in "abc"]
    cell += [_number(items.get(f"_cell_angle_{x}", "?")) for x in ("alpha", "beta", "gamma")]
    if any(v is None for v in cell) or min(cell[:3]) <= 0 or not all(0 < a < 180 for a in cell[3:]):
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
    structure = Structure(lattice, [elements[symbols[i]] for i in order], frac[order])
    if "_chemical_formula_sum" in items and not _same_formula(items["_chemical_formula_sum"], symbols):
        return None  # pymatgen compares them and warns: let it
    return structure


def _same_formula(formula: str, symbols: list[str]) -> bool:
    """Whether a ``_chemical_formula_sum`` such as ``'Na4 Cl4'`` has the proportions of the
    sites' ``symbols``; a formula in any other form (brackets, charges) is not proven equal."""
    terms = formula.split()
    counts: dict[str, float] = {}
    for term in terms:
        m = _FORMULA_TERM.fullmatch(term)
        if m is None:
            return False
        counts[m.group(1)] = counts.get(m.group(1), 0.0) + float(m.group(2) or 1)
    sites: dict[str, int] = {}
    for sym in symbols:
        sites[sym] = sites.get(sym, 0) + 1
    if set(counts) != set(sites):
        return False
    ratio = len(symbols) / sum(counts.values())
    return all(abs(counts[el] * ratio - n) <= 1e-6 * n for el, n in sites.items())
