"""Material classes for exploratory analysis: anion class, crystal system, number of elements.

The anion class follows one deterministic rule built on pymatgen's ``Composition`` and Pauling
electronegativities (``Element.X``), with a charge-balance check so that the centre atom of an
oxy-anion (P in a phosphate, S in a sulfate, N in a nitrate) is not mistaken for a second anion.

Rule (``anion_analysis``):

1. One element → ``"elemental"``.
2. *Anion candidates* are the elements of the anion groups in :data:`ANION_GROUPS`
   (O; S/Se/Te; F/Cl/Br/I; N/P/As/Sb/Bi; H; C/Si/Ge; B).  When every element is a candidate
   (BN, BiOCl, Bi2Te3), the least electronegative one is the cation.  No candidate →
   ``"intermetallic"`` (NiAl, CsAu).
3. Candidates are taken in order of decreasing electronegativity.  The first one is always an
   anion.  Each following candidate becomes an anion only if the cations (every non-anion element)
   can still balance the anion charge: ``sum(n_c * q_c) >= sum(n_a * |q_a|)``, with ``q_c`` the
   highest positive common oxidation state of the cation (pymatgen) and ``q_a`` the nominal anion
   charge in :data:`ANION_CHARGE`.  At the first candidate that fails, it and all less
   electronegative candidates count as cations.
4. The anions' groups give the class: one group → that group's class (``"oxide"``,
   ``"chalcogenide"``, ``"halide"``, ``"pnictide"``, ``"hydride"``, ``"tetrelide"``, ``"boride"``);
   two or more groups → ``"double anion"`` (sub-class such as ``"oxyhalide"`` in
   :attr:`AnionAnalysis.subclass`).

Examples: GaAs pnictide; BaSO4 oxide (Ba²⁺ cannot balance O₄ and S, so S is a cation);
La2O2S double anion (oxychalcogenide); BiOCl double anion (oxyhalide, Bi is the least
electronegative element); Bi2Te3 chalcogenide; SiC and PtSi tetrelides; NiAl intermetallic.
Known limits: molecular cations such as NH4⁺ are not recognised (NH4Cl counts as a
pnictohalide) and water of crystallisation counts as oxide (FeCl2·4H2O is an oxyhalide).

:func:`crystal_system` (space-group number -> crystal system) is the one such mapping of the
package: the ETL writes its ``crystal_system`` column with it.  pymatgen is imported only when
a formula is analysed, so the ETL can use this module without loading pymatgen.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from pymatgen.core import Element

# Anion groups: element symbol -> group name.
ANION_GROUPS: dict[str, str] = {
    "O": "oxide",
    **{s: "chalcogenide" for s in ("S", "Se", "Te")},
    **{s: "halide" for s in ("F", "Cl", "Br", "I")},
    **{s: "pnictide" for s in ("N", "P", "As", "Sb", "Bi")},
    "H": "hydride",
    **{s: "tetrelide" for s in ("C", "Si", "Ge")},
    "B": "boride",
}

# Nominal charge of each anion-group element when it acts as an anion.
ANION_CHARGE: dict[str, int] = {
    "O": 2,
    "S": 2,
    "Se": 2,
    "Te": 2,
    "F": 1,
    "Cl": 1,
    "Br": 1,
    "I": 1,
    "N": 3,
    "P": 3,
    "As": 3,
    "Sb": 3,
    "Bi": 3,
    "H": 1,
    "C": 4,
    "Si": 4,
    "Ge": 4,
    "B": 3,
}

# Classes in display order (figures and tables use this order).
ANION_CLASSES: tuple[str, ...] = (
    "oxide",
    "chalcogenide",
    "halide",
    "pnictide",
    "double anion",
    "hydride",
    "tetrelide",
    "boride",
    "intermetallic",
    "elemental",
)

_PREFIX = {
    "oxide": "oxy",
    "chalcogenide": "chalco",
    "halide": "halo",
    "pnictide": "pnicto",
    "hydride": "hydro",
    "tetrelide": "tetrel",
    "boride": "boro",
}
_GROUP_ORDER = ("oxide", "chalcogenide", "pnictide", "tetrelide", "boride", "hydride", "halide")

CRYSTAL_SYSTEMS: tuple[str, ...] = (
    "triclinic",
    "monoclinic",
    "orthorhombic",
    "tetragonal",
    "trigonal",
    "hexagonal",
    "cubic",
)
# Last space-group number of each crystal system (International Tables numbering).
_SYSTEM_LAST_SG = (2, 15, 74, 142, 167, 194, 230)


@dataclass(frozen=True)
class AnionAnalysis:
    """Result of the anion rule for one composition.

    Attributes:
        formula: reduced formula (pymatgen).
        anion_class: one of :data:`ANION_CLASSES`.
        subclass: for double anions a name such as ``"oxyhalide"``; otherwise equal to ``anion_class``.
        anions: anion element symbols, most electronegative first.
        cations: all other element symbols, most electronegative first.
    """

    formula: str
    anion_class: str
    subclass: str
    anions: tuple[str, ...]
    cations: tuple[str, ...]


def _electronegativity(el: Element) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # noble gases have no Pauling value (NaN)
        x = el.X
    return 0.0 if math.isnan(x) else float(x)


def _max_cation_charge(el: Element) -> int:
    for states in (el.common_oxidation_states, el.oxidation_states):
        positive = [s for s in states if s > 0]
        if positive:
            return max(positive)
    return 0


def _double_anion_name(groups: list[str]) -> str:
    ordered = sorted(groups, key=_GROUP_ORDER.index)
    return "".join(_PREFIX[g] for g in ordered[:-1]) + ordered[-1]


@lru_cache(maxsize=65536)
def anion_analysis(formula: str) -> AnionAnalysis:
    """Apply the module's anion rule to ``formula`` (any string pymatgen's Composition parses)."""
    from pymatgen.core import Composition, Element

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # noble gases have no Pauling electronegativity
        comp = Composition(formula)
        reduced = comp.reduced_formula
    amounts = {el.symbol: float(n) for el, n in comp.reduced_composition.items()}
    # Sort by electronegativity (high first), then by symbol for a stable order on ties.
    elements = sorted(comp.elements, key=lambda e: (-_electronegativity(e), e.symbol))
    symbols = [e.symbol for e in elements]
    if len(elements) == 1:
        return AnionAnalysis(reduced, "elemental", "elemental", (), tuple(symbols))

    candidates = [s for s in symbols if s in ANION_GROUPS]
    if len(candidates) == len(symbols):
        candidates = candidates[:-1]  # only anion-group elements: the least electronegative is the cation
    if not candidates:
        return AnionAnalysis(reduced, "intermetallic", "intermetallic", (), tuple(symbols))

    anions = [candidates[0]]
    for cand in candidates[1:]:
        trial = anions + [cand]
        cations = [s for s in symbols if s not in trial]
        capacity = sum(amounts[s] * _max_cation_charge(Element(s)) for s in cations)
        demand = sum(amounts[s] * ANION_CHARGE[s] for s in trial)
        if capacity + 1e-9 < demand:
            break
        anions = trial

    cations = tuple(s for s in symbols if s not in anions)
    groups = sorted({ANION_GROUPS[s] for s in anions}, key=_GROUP_ORDER.index)
    if len(groups) == 1:
        return AnionAnalysis(reduced, groups[0], groups[0], tuple(anions), cations)
    return AnionAnalysis(reduced, "double anion", _double_anion_name(groups), tuple(anions), cations)


def anion_class(formula: str) -> str:
    """Material class by anion (one of :data:`ANION_CLASSES`); see the module docstring."""
    return anion_analysis(formula).anion_class


def n_elements(formula: str) -> int:
    """Number of distinct elements in ``formula``."""
    from pymatgen.core import Composition

    return len(Composition(formula).elements)


def crystal_system(spacegroup_number: int | None) -> str | None:
    """Crystal system of an International Tables space-group number (1–230).

    ``None`` (space group unknown) gives ``None``; the ETL writes that as an empty cell and
    :func:`classify_frame` shows it as ``"unknown"``.

    Raises:
        ValueError: for a number outside 1–230 (a corrupt record, not a missing value).
    """
    if spacegroup_number is None:
        return None
    number = int(spacegroup_number)
    if not 1 <= number <= 230:
        raise ValueError(f"space-group number must be in 1..230, got {spacegroup_number!r}")
    for system, last in zip(CRYSTAL_SYSTEMS, _SYSTEM_LAST_SG):
        if number <= last:
            return system
    raise AssertionError("unreachable")


def classify_frame(
    df: pd.DataFrame, *, formula_col: str = "formula", spacegroup_col: str | None = "spacegroup_number"
) -> pd.DataFrame:
    """Return a copy of ``df`` with ``anion_class``, ``anion_subclass``, ``n_elements`` and
    ``crystal_system`` columns (``"unknown"`` where the space group is missing).

    A ``crystal_system`` column already in ``df`` (the ETL writes one with
    :func:`crystal_system`) is kept as it is; otherwise it is derived from ``spacegroup_col``.
    Categorical columns use the display order of :data:`ANION_CLASSES` / :data:`CRYSTAL_SYSTEMS`.
    """
    out = df.copy()
    analyses = [anion_analysis(str(f)) for f in out[formula_col]]
    out["anion_class"] = pd.Categorical([a.anion_class for a in analyses], categories=ANION_CLASSES)
    out["anion_subclass"] = [a.subclass for a in analyses]
    out["n_elements"] = [len(a.anions) + len(a.cations) for a in analyses]
    if "crystal_system" in out.columns:
        systems = [None if pd.isna(s) else str(s) for s in out["crystal_system"]]
    elif spacegroup_col is not None and spacegroup_col in out.columns:
        systems = [None if pd.isna(sg) else crystal_system(int(sg)) for sg in out[spacegroup_col]]
    else:
        return out
    unknown = sorted({s for s in systems if s is not None} - set(CRYSTAL_SYSTEMS))
    if unknown:
        raise ValueError(f"crystal_system column holds names that are not crystal systems: {unknown}")
    systems = ["unknown" if s is None else s for s in systems]
    out["crystal_system"] = pd.Categorical(systems, categories=(*CRYSTAL_SYSTEMS, "unknown"))
    return out
