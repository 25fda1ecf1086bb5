"""The ETL configuration: gap windows, experimental sources, JSON loading."""

from __future__ import annotations

import pytest

from cgcnn.config import (
    DS1Config,
    DS2Config,
    EtlConfig,
    ExperimentalSource,
    GapWindow,
)

MEG = ExperimentalSource(name="meg", key="raw/meg.csv", id_column="material_id", gap_column="bg_exp")


def test_gap_windows():
    ds1 = DS1Config().gap_window  # [0, 5)
    ds2 = DS2Config().gap_window  # (0, 5]
    assert [ds1.contains(x) for x in (0.0, 4.99, 5.0, -0.1)] == [True, True, False, False]
    assert [ds2.contains(x) for x in (0.0, 0.01, 5.0, 5.01)] == [False, True, True, False]
    assert ds1.describe() == "[0, 5) eV" and ds2.describe() == "(0, 5] eV"
    assert GapWindow().contains(100.0) and not GapWindow().contains(float("nan"))
    with pytest.raises(ValueError):
        GapWindow(min=3, max=1)


def test_experimental_source_needs_an_id_or_formula_column():
    with pytest.raises(ValueError, match="needs an id_column or a formula_column"):
        ExperimentalSource(name="x", key="raw/x.csv", id_column=None)
    with pytest.raises(ValueError, match="unique"):
        DS2Config(sources=[MEG, MEG])


def test_etl_config_defaults_and_json(tmp_path):
    cfg = EtlConfig()
    assert [s.name for s in cfg.ds2.sources] == ["borlido2019", "megnet2021"]
    assert cfg.ds2.sources[0].header_rows == 2 and cfg.ds2.sources[0].gap_column == "Experimental"
    assert cfg.ds2.conflict_threshold == 0.5
    path = tmp_path / "etl.json"
    path.write_text('{"graph": {"radius": 7, "max_neighbors": 14}, "ds2": {"conflict_threshold": 0.3}}')
    loaded = EtlConfig.load(path)
    assert (loaded.graph.radius, loaded.graph.max_neighbors, loaded.ds2.conflict_threshold) == (7, 14, 0.3)
    assert EtlConfig.model_validate(loaded.to_dict()) == loaded
    path.write_text('{"ds2": {"conflict_treshold": 0.3}}')
    with pytest.raises(ValueError, match="conflict_treshold"):
        EtlConfig.load(path)
