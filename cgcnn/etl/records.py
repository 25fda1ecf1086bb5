"""What the ETL keeps of a Materials Project material, and how a formula names one.

:class:`MaterialRecord` (structure, reduced formula, space group, PBE gap, energy above
hull), :class:`MaterialsSource` (the two queries every source answers: the offline
snapshot of :mod:`cgcnn.etl.materials`, the live client of :mod:`cgcnn.etl.mp_live`), and
:func:`match_formula`, the fixed rule that turns a formula (+ space group) into one id.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from cgcnn.data.snapshot import MaterialsError

__all__ = ["FormulaMatch", "MaterialRecord", "MaterialsError", "MaterialsSource", "match_formula", "reduced_formula"]


@dataclass(frozen=True)
class MaterialRecord:
    """What the ETL keeps of one Materials Project summary document."""

    material_id: str
    formula: str
    spacegroup_number: int | None
    spacegroup_symbol: str | None
    nsites: int
    band_gap: float | None
    structure_cif: str
    energy_above_hull: float | None = None
    band_gap_source: str | None = None

    def to_snapshot(self) -> dict:
        return {
            "material_id": self.material_id,
            "formula_pretty": self.formula,
            "spacegroup_number": self.spacegroup_number,
            "spacegroup_symbol": self.spacegroup_symbol,
            "nsites": self.nsites,
            "band_gap": self.band_gap,
            "band_gap_source": self.band_gap_source,
            "energy_above_hull": self.energy_above_hull,
            "structure_cif": self.structure_cif,
        }

    @classmethod
    def from_snapshot(cls, rec: dict) -> MaterialRecord:
        gap = rec.get("band_gap")
        ehull = rec.get("energy_above_hull")
        sg = rec.get("spacegroup_number")
        return cls(
            material_id=str(rec["material_id"]),
            formula=str(rec["formula_pretty"]),
            spacegroup_number=None if sg is None else int(sg),
            spacegroup_symbol=rec.get("spacegroup_symbol"),
            nsites=int(rec["nsites"]),
            band_gap=None if gap is None else float(gap),
            structure_cif=rec["structure_cif"],
            energy_above_hull=None if ehull is None else float(ehull),
            band_gap_source=rec.get("band_gap_source"),
        )


def reduced_formula(formula: str) -> str:
    """Materials Project style reduced formula (``Cd(GaSe2)2``); ValueError if unparseable."""
    from pymatgen.core import Composition

    text = str(formula).strip()
    if not text:
        raise ValueError("empty formula")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return Composition(text).reduced_formula
        except Exception as exc:  # pymatgen raises ValueError/KeyError/... for bad input
            raise ValueError(f"cannot parse formula {formula!r}: {exc}") from None


def _natural_key(material_id: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", material_id))


@dataclass(frozen=True)
class FormulaMatch:
    """Outcome of :func:`match_formula`.

    ``status`` is ``unique`` (one candidate left), ``ambiguous`` (several left; the rule
    picked ``material_id``) or ``unmatched`` (``material_id`` is None).
    """

    formula: str
    spacegroup: str | None
    material_id: str | None
    status: Literal["unique", "ambiguous", "unmatched"]
    candidates: tuple[str, ...]
    detail: str


def _spacegroup_matches(rec: MaterialRecord, spacegroup: int | str) -> bool:
    if isinstance(spacegroup, int):
        return rec.spacegroup_number == spacegroup
    text = str(spacegroup).strip()
    if re.fullmatch(r"\d+(\.0*)?", text):
        return rec.spacegroup_number == int(float(text))
    norm = text.replace(" ", "").replace("_", "")
    sym = (rec.spacegroup_symbol or "").replace(" ", "").replace("_", "")
    return sym == norm


def match_formula(
    candidates: Iterable[MaterialRecord], formula: str, spacegroup: int | str | None = None
) -> FormulaMatch:
    """Pick one material for a (formula, space group) row of a literature table.

    Rule, applied in order:
      1. same reduced formula;
      2. same space group, when one is given (number, or Hermann–Mauguin symbol with spaces
         ignored);
      3. lowest energy above hull (records without one sort last);
      4. smallest material id (natural order), so ties resolve the same way every run.
    """
    sg = None if spacegroup is None or str(spacegroup).strip() in {"", "nan"} else spacegroup
    try:
        target = reduced_formula(formula)
    except ValueError as exc:
        return FormulaMatch(str(formula), None if sg is None else str(sg), None, "unmatched", (), str(exc))
    same = [r for r in candidates if r.formula == target]
    if sg is not None:
        with_sg = [r for r in same if _spacegroup_matches(r, sg)]
        if not with_sg:
            detail = f"no material with formula {target} and space group {sg}" + (
                f" (formula found with space groups {sorted({r.spacegroup_symbol for r in same if r.spacegroup_symbol})})"
                if same
                else ""
            )
            return FormulaMatch(target, str(sg), None, "unmatched", tuple(r.material_id for r in same), detail)
        same = with_sg
    if not same:
        return FormulaMatch(
            target, None if sg is None else str(sg), None, "unmatched", (), f"no material with formula {target}"
        )
    ranked = sorted(
        same,
        key=lambda r: (
            r.energy_above_hull is None,
            r.energy_above_hull if r.energy_above_hull is not None else 0.0,
            _natural_key(r.material_id),
        ),
    )
    ids = tuple(r.material_id for r in ranked)
    if len(ranked) == 1:
        return FormulaMatch(target, None if sg is None else str(sg), ids[0], "unique", ids, "one candidate")
    best = ranked[0]
    how = (
        f"lowest energy above hull ({best.energy_above_hull:g} eV/atom)"
        if best.energy_above_hull is not None
        else "smallest id (no energy above hull known)"
    )
    return FormulaMatch(
        target,
        None if sg is None else str(sg),
        best.material_id,
        "ambiguous",
        ids,
        f"{len(ranked)} candidates; picked {best.material_id} by {how}",
    )


class MaterialsSource(Protocol):
    """What the ETL asks of the Materials Project (live or snapshot)."""

    kind: str

    def by_ids(self, ids: Iterable[str]) -> dict[str, MaterialRecord]:
        """Records of the ids that exist; absent ids are simply missing from the result."""
        ...

    def by_formula(self, formulas: Iterable[str]) -> dict[str, list[MaterialRecord]]:
        """Reduced formula -> every record with that formula."""
        ...

    @property
    def database_version(self) -> str | None: ...

    def provenance(self) -> dict:
        """JSON-able description (database version, checksums); never holds secrets."""
        ...
