"""The full ETL on ``../shared/data`` (slow: ~21k structures become graphs)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cgcnn.data.graphset import GraphSet
from cgcnn.etl import prepare_work_bucket, run_etl

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.shared_data,
    pytest.mark.skipif(not (SHARED_DATA / "bucket" / "raw").is_dir(), reason="../shared/data is absent"),
]


def test_full_etl_on_shared_data(tmp_path):
    work = tmp_path / "bucket"
    prepare_work_bucket(SHARED_DATA / "bucket", work)  # nothing is written under ../shared
    start = time.perf_counter()
    result = run_etl(work, f"snapshot:{SHARED_DATA / 'mp_snapshot' / 'summary.jsonl.gz'}", workers=2, progress=False)
    seconds = time.perf_counter() - start
    print(f"full ETL: {seconds:.0f} s; {result.report['timings_s']}")

    # README: 20,969 ids, 120 without a PBE gap, 1,834 above 5 eV; DS3 ids removed
    assert (result.counts["ds1"], result.counts["ds2"], result.counts["ds3"]) == (18986, 700, 29)
    by_ds = result.counts["drops_by_dataset"]
    assert by_ds["ds1"]["no_label"] == 120 and by_ds["ds1"]["out_of_range"] == 1834
    assert by_ds["ds1"]["overlap_ds3"] == 29
    # the five Borlido ids that are not in the snapshot
    missing = set(result.drops.loc[result.drops["reason"] == "not_in_mp", "material_id"])
    assert missing == {"mp-24850", "mp-25054", "mp-25176", "mp-542885", "mp-557056"}
    # BeSe (Borlido 5.5 eV) and mp-643 (Borlido 5.9 eV) stay out although megnet2021 has them in range
    out = result.drops[(result.drops["reason"] == "out_of_range") & (result.drops["dataset"] == "ds2")]
    assert {"mp-1541", "mp-643"} <= set(out["material_id"])
    assert result.counts["conflicts"] == 29
    poly = result.polymorphs
    cdse = poly[(poly["ds3_id"] == "mp-2691") & (poly["dataset"] == "ds2")]
    assert cdse["material_id"].tolist() == ["mp-1070"]
    assert result.ds3.set_index("material_id").loc["mp-1541", "bg_exp"] == 5.5
    graphs = GraphSet.load_npz(work / "graphs" / "ds3.npz")
    assert graphs.ids == result.ds3["material_id"].tolist()
    assert result.report["materials"]["sha256"]
