"""The live Materials Project through the ``mp-api`` client (:class:`MPSource`).

It answers the same two queries as the offline :class:`~cgcnn.etl.materials.SnapshotSource`
(see :mod:`cgcnn.etl.materials`).  The API key is read from ``MP_API_KEY`` and never logged
or written anywhere: it is scrubbed from every error message.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator

from cgcnn.etl.records import MaterialRecord, MaterialsError, reduced_formula

__all__ = ["MPSource"]

_LIVE_FIELDS = [
    "material_id",
    "formula_pretty",
    "symmetry",
    "nsites",
    "band_gap",
    "energy_above_hull",
    "structure",
]


def _batched(items: list, n: int) -> Iterator[list]:
    for start in range(0, len(items), n):
        yield items[start : start + n]


class MPSource:
    """The live Materials Project through ``mp_api.client.MPRester``.

    Args:
        api_key: defaults to the ``MP_API_KEY`` environment variable (never logged).
        endpoint: API root; defaults to ``MP_API_ENDPOINT`` or the public Materials Project.
        batch_size: ids (or formulas) per request.
    """

    kind = "mp"

    def __init__(self, api_key: str | None = None, endpoint: str | None = None, *, batch_size: int = 500):
        key = api_key or os.environ.get("MP_API_KEY")
        if not key:
            raise MaterialsError(
                "no Materials Project API key: set the MP_API_KEY environment variable "
                "(or use --materials snapshot:PATH for an offline snapshot)"
            )
        self._api_key = key
        endpoint = endpoint or os.environ.get("MP_API_ENDPOINT") or "https://api.materialsproject.org/"
        self.endpoint = endpoint if endpoint.endswith("/") else endpoint + "/"
        self.batch_size = batch_size
        self._rester = None
        self._id_aliases: dict[str, str] = {}

    def __repr__(self) -> str:  # the key stays out of reprs and logs
        return f"MPSource(endpoint={self.endpoint!r})"

    @property
    def rester(self):
        if self._rester is None:
            from mp_api.client import MPRester

            try:
                with warnings.catch_warnings():  # client/server version chatter
                    warnings.simplefilter("ignore")
                    self._rester = MPRester(
                        api_key=self._api_key,
                        endpoint=self.endpoint,
                        use_document_model=False,
                        mute_progress_bars=True,
                    )
            except Exception as exc:
                raise MaterialsError(
                    f"cannot connect to the Materials Project at {self.endpoint}: {_scrub(exc, self._api_key)}"
                ) from None
        return self._rester

    @property
    def database_version(self) -> str | None:
        return self.rester.db_version or None

    def _search(self, **query) -> list[dict]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return list(self.rester.materials.summary.search(fields=_LIVE_FIELDS, **query))
        except Exception as exc:
            raise MaterialsError(
                f"Materials Project query failed at {self.endpoint}: {_scrub(exc, self._api_key)}"
            ) from None

    def _record(self, doc: dict) -> MaterialRecord:
        from pymatgen.core import Structure
        from pymatgen.io.cif import CifWriter

        raw = doc.get("structure")
        structure = raw if isinstance(raw, Structure) else Structure.from_dict(raw)
        sym = doc.get("symmetry") or {}
        mid = str(doc["material_id"])
        gap = doc.get("band_gap")
        ehull = doc.get("energy_above_hull")
        return MaterialRecord(
            material_id=self._id_aliases.get(mid, mid),
            formula=doc.get("formula_pretty") or structure.composition.reduced_formula,
            spacegroup_number=sym.get("number"),
            spacegroup_symbol=sym.get("symbol"),
            nsites=int(doc.get("nsites") or len(structure)),
            band_gap=None if gap is None else float(gap),
            structure_cif=str(CifWriter(structure)),
            energy_above_hull=None if ehull is None else float(ehull),
            band_gap_source="materials_project",
        )

    def by_ids(self, ids: Iterable[str]) -> dict[str, MaterialRecord]:
        from mp_api.client.core.utils import validate_ids

        wanted = list(dict.fromkeys(ids))
        out: dict[str, MaterialRecord] = {}
        for batch in _batched(wanted, self.batch_size):
            valid = []
            for mid in batch:
                try:
                    canonical = validate_ids([mid])[0]
                except Exception:  # not an id the API accepts: it cannot be in MP
                    continue
                # the client normalises ids (e.g. zero padding); answer in the caller's spelling
                self._id_aliases[canonical] = mid
                valid.append(mid)
            if not valid:
                continue
            for doc in self._search(material_ids=valid, chunk_size=min(1000, len(valid))):
                rec = self._record(doc)
                if rec.material_id in batch:
                    out[rec.material_id] = rec
        return {i: out[i] for i in wanted if i in out}

    def by_formula(self, formulas: Iterable[str]) -> dict[str, list[MaterialRecord]]:
        targets = []
        for f in formulas:
            try:
                targets.append(reduced_formula(f))
            except ValueError:
                continue
        targets = list(dict.fromkeys(targets))
        out: dict[str, list[MaterialRecord]] = {t: [] for t in targets}
        for batch in _batched(targets, min(self.batch_size, 50)):
            for doc in self._search(formula=batch):
                rec = self._record(doc)
                if rec.formula in out:
                    out[rec.formula].append(rec)
        return out

    def provenance(self) -> dict:
        return {"kind": "mp", "endpoint": self.endpoint, "database_version": self.database_version}


def _scrub(exc: Exception, secret: str) -> str:
    text = str(exc)
    return text.replace(secret, "***") if secret else text
