"""Reading a Materials Project snapshot: gzip JSON lines (or plain ``.jsonl``), one material a line.

The ETL (:mod:`cgcnn.etl.materials`) serves its queries from such a file, and prediction reads
structures from it (:mod:`cgcnn.data.building`); both read it here, so neither depends on the other.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from cgcnn.errors import CgcnnError


class MaterialsError(CgcnnError, RuntimeError):
    """A Materials Project query or snapshot could not be served."""


def read_snapshot(path: str | Path) -> Iterator[dict]:
    """Records of a Materials Project snapshot (gzip JSON lines or plain ``.jsonl``, one
    material a line).  A missing file or a line that is not JSON raises
    :class:`MaterialsError` naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise MaterialsError(f"snapshot file {path} does not exist")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise MaterialsError(f"{path}: line {n} is not valid JSON ({exc.msg})") from None
