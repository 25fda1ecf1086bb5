"""Raw cells: header rows -> column names, gap cells -> numbers, column checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cgcnn.etl.parsing import (
    EtlError,
    cell_text,
    is_missing,
    parse_gap,
    require_columns,
    table_from_cells,
)


@pytest.mark.parametrize(
    "cell, expected",
    [
        (1.5, (1.5, "ok")),
        (2, (2.0, "ok")),
        (np.float64(0.25), (0.25, "ok")),
        (" 3.40 ", (3.4, "ok")),
        ("1e-1", (0.1, "ok")),
        (0.0, (0.0, "ok")),
        (None, (None, "missing")),
        (float("nan"), (None, "missing")),
        ("", (None, "missing")),
        ("  ", (None, "missing")),
        ("3.8-3.7", (None, "unparseable")),
        ("~2", (None, "unparseable")),
        ("1.2 eV", (None, "unparseable")),
        (True, (None, "unparseable")),
        (float("inf"), (None, "unparseable")),
        ("nan", (None, "unparseable")),
    ],
)
def test_parse_gap(cell, expected):
    assert parse_gap(cell) == expected


def test_two_row_header_columns_are_read_by_name():
    cells = pd.DataFrame(
        [
            ["Material", "MP_ID", "Calculated gaps (eV)", None, "DOI"],
            [None, None, "PBE", "Experimental", None],
            ["Si", "mp-149", 0.61, 1.12, "10.1/x"],
        ],
        dtype=object,
    )
    body, first_line = table_from_cells(cells, 2, "borlido.xlsx")
    assert list(body.columns) == ["Material", "MP_ID", "PBE", "Experimental", "DOI"]
    assert first_line == 3
    assert body.loc[0, "Experimental"] == 1.12


def test_repeated_and_blank_header_cells_get_unique_names():
    cells = pd.DataFrame([["id", "gap", "gap", None], ["mp-1", 1.0, 2.0, "x"]], dtype=object)
    body, first_line = table_from_cells(cells, 1, "t.csv")
    assert list(body.columns) == ["id", "gap", "gap_2", "column_4"] and first_line == 2


def test_missing_cells_and_cell_text():
    assert [is_missing(v) for v in (None, pd.NA, float("nan"), "", "  ", 0, "0", "x")] == [
        True,
        True,
        True,
        True,
        True,
        False,
        False,
        False,
    ]
    assert (cell_text(" mp-1 "), cell_text(None), cell_text(7)) == ("mp-1", "", "7")


def test_require_columns_names_the_first_missing_column():
    df = pd.DataFrame({"id": [1], "gap": [2.0]})
    require_columns(df, ["id", None, "gap"], "raw/t.csv")  # None entries are optional columns
    with pytest.raises(EtlError, match=r"raw/t\.csv has no column 'formula'"):
        require_columns(df, ["id", "formula", "sg"], "raw/t.csv")


def test_too_few_header_rows_is_a_clear_error():
    with pytest.raises(EtlError, match="fewer than 2 header rows"):
        table_from_cells(pd.DataFrame([["id"]], dtype=object), 2, "t.csv")
