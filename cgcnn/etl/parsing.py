"""Raw table cells: header rows -> column names, band-gap cells -> numbers, column checks.

The raw tables are read with every cell untouched (text or whatever the spreadsheet holds);
this module is where a cell becomes a value.  A band-gap cell is never coerced: ``"3.8-3.7"``
is reported as ``unparseable``, not read as 3.8.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from cgcnn.errors import CgcnnError

__all__ = ["EtlError", "cell_text", "is_missing", "parse_gap", "require_columns", "table_from_cells"]

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


class EtlError(CgcnnError, ValueError):
    """The inputs or the configuration do not fit together (e.g. a missing column)."""


def is_missing(value) -> bool:
    """True for None, NA, NaN and blank text."""
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def cell_text(value) -> str:
    """A cell as stripped text; ``""`` for a missing cell."""
    return "" if is_missing(value) else str(value).strip()


def parse_gap(value) -> tuple[float | None, str]:
    """A band-gap cell -> (eV, status) with status ``ok``, ``missing`` or ``unparseable``.

    Numbers and plain decimal text (``"1.5"``, ``" 2e0 "``) are accepted; ranges such as
    ``"3.8-3.7"``, units, booleans and non-finite values are ``unparseable``.
    """
    if is_missing(value):
        return None, "missing"
    if isinstance(value, bool):
        return None, "unparseable"
    if isinstance(value, (int, float)) or hasattr(value, "dtype"):
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None, "unparseable"
        return (number, "ok") if math.isfinite(number) else (None, "unparseable")
    text = str(value).strip()
    if _NUMBER.fullmatch(text):
        return float(text), "ok"
    return None, "unparseable"


def table_from_cells(cells: pd.DataFrame, header_rows: int, where: str) -> tuple[pd.DataFrame, int]:
    """Name the columns of a header-less sheet from its first ``header_rows`` rows.

    Each column takes the lowest non-empty header cell above it (so a caption row spanning
    the functional names is skipped).  Returns the body and the 1-based line number of its
    first row.
    """
    if len(cells) < header_rows:
        raise EtlError(f"{where} has fewer than {header_rows} header rows")
    names: list[str] = []
    for j in range(cells.shape[1]):
        name = ""
        for i in range(header_rows):
            text = cell_text(cells.iat[i, j])
            if text:
                name = text
        name = name or f"column_{j + 1}"
        base, n = name, 1
        while name in names:  # repeated header text: "PBE", "PBE_2", …
            n += 1
            name = f"{base}_{n}"
        names.append(name)
    body = cells.iloc[header_rows:].reset_index(drop=True)
    body.columns = names
    return body, header_rows + 1


def require_columns(df: pd.DataFrame, columns: list[str | None], where: str) -> None:
    """EtlError naming the first of ``columns`` (None entries ignored) that ``df`` lacks."""
    missing = [c for c in columns if c is not None and c not in df.columns]
    if missing:
        raise EtlError(f"{where} has no column {missing[0]!r} (columns: {list(df.columns)})")
