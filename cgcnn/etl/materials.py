"""Materials Project access: an offline snapshot and the live client, one interface.

Both sources (:class:`SnapshotSource` here, :class:`~cgcnn.etl.mp_live.MPSource` for the
live ``mp-api`` client) answer the two queries the ETL needs:

* :meth:`MaterialsSource.by_ids` — records (structure, reduced formula, space group, PBE gap,
  energy above hull) for a batch of material ids;
* :meth:`MaterialsSource.by_formula` — every record with a given reduced formula, for
  literature tables that give a formula (+ space group) instead of an id.

A formula is turned into one id by :func:`match_formula`, a fixed rule (same reduced
formula; same space group when the table gives one; then the lowest energy above hull; then
the smallest id) so that re-running the ETL always picks the same material.

Snapshots are gzipped JSON lines (schema of ``../shared/data/mp_snapshot/summary.jsonl.gz``:
``material_id, formula_pretty, spacegroup_number, spacegroup_symbol, nsites, band_gap,
band_gap_source, structure_cif``; snapshots written by :func:`write_snapshot` add
``energy_above_hull``) with a ``metadata.json`` beside them that records the database version.
The API key is read from ``MP_API_KEY`` and never logged or written anywhere.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from cgcnn.data.snapshot import read_snapshot
from cgcnn.etl.mp_live import MPSource
from cgcnn.etl.records import (
    FormulaMatch,
    MaterialRecord,
    MaterialsError,
    MaterialsSource,
    match_formula,
    reduced_formula,
)
from cgcnn.etl.storage import StorageError, protected_roots
from cgcnn.fileio import atomic_write_bytes, sha256_file

__all__ = [
    "FormulaMatch",
    "MaterialRecord",
    "MaterialsError",
    "MaterialsSource",
    "SnapshotSource",
    "match_formula",
    "open_materials",
    "read_snapshot",
    "reduced_formula",
    "write_snapshot",
]


class SnapshotSource:
    """An offline snapshot serving the same queries as the live client.

    The whole file is indexed on first use (the study's 21k records take about a second).
    """

    kind = "snapshot"

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_file():
            raise MaterialsError(f"snapshot file {self.path} does not exist")
        self._by_id: dict[str, MaterialRecord] | None = None
        self._by_formula: dict[str, list[MaterialRecord]] | None = None
        meta_path = self.path.parent / "metadata.json"
        self.metadata: dict = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        self._sha256: str | None = None

    def _index(self) -> dict[str, MaterialRecord]:
        if self._by_id is None:
            by_id: dict[str, MaterialRecord] = {}
            by_formula: dict[str, list[MaterialRecord]] = {}
            for raw in read_snapshot(self.path):
                try:
                    rec = MaterialRecord.from_snapshot(raw)
                except (KeyError, TypeError, ValueError) as exc:
                    raise MaterialsError(f"{self.path}: malformed record {raw.get('material_id')!r}: {exc}") from None
                by_id.setdefault(rec.material_id, rec)
                by_formula.setdefault(rec.formula, []).append(rec)
            self._by_id, self._by_formula = by_id, by_formula
        return self._by_id

    def __len__(self) -> int:
        return len(self._index())

    def by_ids(self, ids: Iterable[str]) -> dict[str, MaterialRecord]:
        index = self._index()
        return {i: index[i] for i in ids if i in index}

    def by_formula(self, formulas: Iterable[str]) -> dict[str, list[MaterialRecord]]:
        self._index()
        assert self._by_formula is not None
        out = {}
        for f in formulas:
            try:
                key = reduced_formula(f)
            except ValueError:
                continue
            out[key] = list(self._by_formula.get(key, []))
        return out

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = sha256_file(self.path)
        return self._sha256

    @property
    def database_version(self) -> str | None:
        return self.metadata.get("database_version")

    def provenance(self) -> dict:
        return {
            "kind": "snapshot",
            "path": str(self.path),
            "sha256": self.sha256,
            "database_version": self.database_version,
            "description": self.metadata.get("description"),
            "created": self.metadata.get("created"),
            "n_materials": self.metadata.get("n_materials"),
        }

    def __repr__(self) -> str:
        return f"SnapshotSource({str(self.path)!r})"


def open_materials(spec: str | MaterialsSource, *, batch_size: int = 500) -> MaterialsSource:
    """``snapshot:PATH`` (or a ``.jsonl[.gz]`` path), ``mp`` or ``mp:ENDPOINT``."""
    if not isinstance(spec, str):
        return spec
    if spec.startswith("snapshot:"):
        return SnapshotSource(spec[len("snapshot:") :])
    if spec == "mp":
        return MPSource(batch_size=batch_size)
    if spec.startswith("mp:"):
        return MPSource(endpoint=spec[3:], batch_size=batch_size)
    if spec.endswith((".jsonl.gz", ".jsonl")):
        return SnapshotSource(spec)
    raise MaterialsError(f"unknown materials source {spec!r}: use snapshot:PATH, mp or mp:ENDPOINT")


def write_snapshot(
    source: MaterialsSource,
    path: str | Path,
    *,
    ids: Iterable[str] = (),
    formulas: Iterable[str] = (),
    description: str | None = None,
) -> dict:
    """Freeze what ``source`` answers for ``ids`` and ``formulas`` into a snapshot file.

    Writes ``path`` (gzipped JSON lines sorted by id, byte-reproducible) and
    ``metadata.json`` beside it (database version, counts, the file's sha256).  Returns the
    metadata.
    """
    path = Path(path).expanduser().resolve()
    for guard in protected_roots():
        if path == guard or guard in path.parents:
            raise StorageError(f"refusing to write a snapshot under the shared data folder {guard}")
    records = dict(source.by_ids(list(ids)))
    for recs in source.by_formula(list(formulas)).values():
        for rec in recs:
            records.setdefault(rec.material_id, rec)
    lines = [json.dumps(records[k].to_snapshot(), ensure_ascii=False, sort_keys=False) for k in sorted(records)]
    data = gzip.compress(("\n".join(lines) + ("\n" if lines else "")).encode(), mtime=0)
    atomic_write_bytes(path, data)
    n_null = sum(1 for r in records.values() if r.band_gap is None)
    prov = source.provenance()
    meta = {
        "description": description
        or f"Materials Project summary records frozen by `cgcnn etl snapshot` from {prov.get('kind')}",
        "database_version": prov.get("database_version"),
        "source": {k: v for k, v in prov.items() if k != "path"},
        "n_materials": len(records),
        "n_band_gap_null": n_null,
        "band_gap_functional": "Materials Project summary band_gap (PBE/GGA+U for the study's releases)",
        "sha256": hashlib.sha256(data).hexdigest(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "fields": list(MaterialRecord.__dataclass_fields__),
    }
    (path.parent / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
