"""Every notebook, executed through papermill on the bundled fixture (profile ``fixture``).

The notebooks depend on each other (ETL -> EDA -> M1 -> cross-validation -> methods -> trust ->
final models and DS3 -> t-SNE -> report), so one module-scoped run of ``scripts/run_pipeline.py``
executes them in order; each ``test_notebook_<name>`` then checks its own notebook's outputs.  Fixture facts used below
(tests/fixtures/README.md): DS2 has 23 materials and DS3 6; DS3 has HSE06 for 5 and G0W0 for
4 materials; fx-29 (ZnS, wurtzite) is the DS3 material with a DS2 polymorph (fx-10).
"""

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from pipeline_runner import rp

from cgcnn.study.methods import load_methods

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = {
    "etl": "01-data-preparation/01-etl.ipynb",
    "eda": "01-data-preparation/02-eda.ipynb",
    "base-model": "02-ml-dev/01-base-model.ipynb",
    "cross-validation": "02-ml-dev/02-cross-validation.ipynb",
    "methods": "02-ml-dev/03-methods.ipynb",
    "trust": "02-ml-dev/04-trust.ipynb",
    "final-models-and-ds3": "02-ml-dev/05-final-models-and-ds3.ipynb",
    "tsne": "03-insights/01-tsne.ipynb",
    "report": "03-insights/02-report.ipynb",
}
# the fixture profile's CHGNet candidates (tests/backbones checks the backbone itself)
CHGNET = ["chgnet_frozen_magpie", "chgnet_readout", "chgnet_block"]
BACKBONE_ROWS = [f"ens_{c}" for c in CHGNET]
ALL_MODELS = [
    "pbe",
    "pbe_linear",
    "gbm_composition",
    "gbm_composition_pbe",
    "gbm_composition_pbe_correction",
    "hse06",
    "g0w0",
    "m1",
    "m2",
    "m2_none",
    "m2_embedding",
    "m2_convs",
    "m2_head",
    "control",
    "ensemble",
    *BACKBONE_ROWS,  # every CHGNet candidate compared, fitted on DS2 and scored on DS3 once
]
ENSEMBLE_CANDIDATES = [
    "ens_delta",
    "ens_delta_composition",
    "ens_multifidelity",  # the fixture profile's methods, in the CV only
    "ens_delta_composition_huber",
    "ens_delta_trees",
    "ens_delta_composition_trees",
    "ens_multifidelity_trees",
    "ens_delta_composition_huber_trees",
    "ens_delta_ctrees",
    "ens_delta_composition_ctrees",
    "ens_multifidelity_ctrees",
    "ens_delta_composition_huber_ctrees",
    *[f"ens_{c}{suffix}" for suffix in ("", "_trees", "_ctrees") for c in CHGNET],
]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory):
    """Run the whole pipeline once on the fixture; returns (exit code, printed lines, run folder)."""
    out = tmp_path_factory.mktemp("runs")
    lines: list[str] = []
    args = rp.parse_args(["--output", str(out), "--run-id", "fixture-test", "--device", "cpu"])
    pipeline = rp.Pipeline(args, echo=lines.append)
    code = pipeline.run()
    return code, "\n".join(lines), pipeline.run_dir


def _completed(fixture_run, stage: str) -> Path:
    code, text, run_dir = fixture_run
    manifest = next((run_dir / "stages").glob(f"*-{stage}.json"), None)
    if manifest is None or json.loads(manifest.read_text())["status"] != "completed":
        pytest.fail(f"stage {stage} did not complete (pipeline exit code {code}):\n{text}")
    executed = run_dir / "notebooks" / NOTEBOOKS[stage]
    nb = nbformat.read(executed, as_version=4)
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert not errors
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")  # it really ran
    return run_dir


def _labels(models: list[str]) -> list[str]:
    from cgcnn.study.display import label

    return [label(m) for m in models]


def _png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG


def test_notebook_etl(fixture_run):
    run_dir = _completed(fixture_run, "etl")
    meta = json.loads((run_dir / "data" / "etl.json").read_text())
    assert meta["counts"]["ds2"] == 23
    assert meta["counts"]["ds3"] == 6
    ds1 = pd.read_csv(run_dir / meta["files"]["ds1_csv"])
    assert len(ds1) == meta["counts"]["ds1"] > 0
    assert ds1["bg_pbe"].between(0, 5, inclusive="left").all()
    counts = pd.read_csv(run_dir / "tables" / "etl_counts.csv", index_col=0)
    assert list(counts.index) == ["DS1", "DS2", "DS3"]
    drops = pd.read_csv(run_dir / "tables" / "etl_drops.csv", index_col=0)
    assert "overlap_ds3" in drops.index
    # the source fixture was copied, never written to
    assert (run_dir / "bucket" / "raw" / "validation_set.csv").read_bytes() == (
        REPO / "tests" / "fixtures" / "bucket" / "raw" / "validation_set.csv"
    ).read_bytes()
    assert not (REPO / "tests" / "fixtures" / "bucket" / "processed").exists()


def test_notebook_eda(fixture_run):
    run_dir = _completed(fixture_run, "eda")
    for name in ("eda_gaps.png", "eda_classes.png", "eda_pbe_vs_experiment.png"):
        assert _png(run_dir / "figures" / name), name
    meta = json.loads((run_dir / "data" / "etl.json").read_text())
    anions = pd.read_csv(run_dir / "tables" / "eda_anion_classes.csv", index_col=0)
    assert list(anions.columns) == ["DS1", "DS2", "DS3"]
    assert anions.sum().to_dict() == {"DS1": meta["counts"]["ds1"], "DS2": 23, "DS3": 6}
    # DS3 of the fixture: ZnTe, GaN, CdSe, ZnS, InN, SnO2 -> 2 chalcogenides... by hand:
    # chalcogenides ZnTe, CdSe, ZnS (3); pnictides GaN, InN (2); oxide SnO2 (1)
    assert anions.loc["chalcogenide", "DS3"] == 3
    assert anions.loc["pnictide", "DS3"] == 2
    assert anions.loc["oxide", "DS3"] == 1
    systems = pd.read_csv(run_dir / "tables" / "eda_crystal_systems.csv", index_col=0)
    assert systems.loc["hexagonal", "DS3"] == 4  # four wurtzites
    assert systems.loc["tetragonal", "DS3"] == 1  # rutile SnO2


def test_notebook_base_model(fixture_run):
    from cgcnn.training.checkpoint import load_checkpoint

    run_dir = _completed(fixture_run, "base-model")
    loaded = load_checkpoint(run_dir / "models" / "m1" / "best.pt")
    assert loaded.graph_config.radius == 7.0 and loaded.graph_config.max_neighbors == 14
    metrics = pd.read_csv(run_dir / "tables" / "m1_ds1_metrics.csv", index_col=0)
    assert list(metrics.index) == ["train", "val", "test"]
    assert np.isfinite(metrics["mae"]).all()
    assert _png(run_dir / "figures" / "m1_history.png")


def test_notebook_cross_validation(fixture_run):
    run_dir = _completed(fixture_run, "cross-validation")
    # 3 grouped folds, every DS2 material out of fold once per model
    cv = json.loads((run_dir / "cv.json").read_text())
    assert cv["protocol"]["folds"] == 3 and cv["protocol"]["grouped_by"] == "reduced formula"
    assert cv["selected_policy"] in ("none", "embedding", "convs", "head")
    meta = json.loads((run_dir / "data" / "etl.json").read_text())
    ds2 = pd.read_csv(run_dir / meta["files"]["ds2_csv"])
    preds = pd.read_csv(run_dir / "tables" / "cv_predictions.csv")
    assert set(preds["model"]) == set(ALL_MODELS) - {"hse06", "g0w0", "m1", "ensemble", *BACKBONE_ROWS}
    assert (preds.groupby("model")["material_id"].nunique() == 23).all()
    formulas = ds2.set_index("material_id")["formula"]
    assert (
        preds.assign(f=formulas.loc[preds["material_id"]].to_numpy()).groupby(["model", "f"])["fold"].nunique() == 1
    ).all()
    candidates = pd.read_csv(run_dir / "tables" / "cv_candidates.csv")
    assert len(candidates) == 3 * (4 * 2 + 2)  # folds x (4 policies x 2 rates + the control x 2 rates)
    assert not (run_dir / "models" / "cv").exists()  # scratch removed


def test_notebook_final_models_and_ds3(fixture_run):
    run_dir = _completed(fixture_run, "final-models-and-ds3")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics["models"]) == ALL_MODELS
    for name, entry in metrics["models"].items():
        for key in ("mae", "mae_lo", "mae_hi", "rmse", "n"):
            assert math.isfinite(entry[key]), (name, key)
        assert entry["mae_lo"] <= entry["mae"] <= entry["mae_hi"]
    models = metrics["models"]
    assert models["pbe"]["n"] == 6 and models["hse06"]["n"] == 5 and models["g0w0"]["n"] == 4
    for name in ("m2", "m2_none", "control"):
        assert models[name]["seeds"] == 2 and math.isfinite(models[name]["seed_mae_std"])
    assert math.isfinite(models["m2"]["diff_vs_control"])
    # raw PBE by hand from the DS3 table; the linear correction is fitted on all of DS2
    meta = json.loads((run_dir / "data" / "etl.json").read_text())
    ds3 = pd.read_csv(run_dir / meta["files"]["ds3_csv"])
    ds2 = pd.read_csv(run_dir / meta["files"]["ds2_csv"])
    assert models["pbe"]["mae"] == pytest.approx((ds3["bg_pbe"] - ds3["bg_exp"]).abs().mean())
    slope, intercept = np.polyfit(ds2["bg_pbe"], ds2["bg_exp"], 1)
    assert models["pbe_linear"]["mae"] == pytest.approx(
        (slope * ds3["bg_pbe"] + intercept - ds3["bg_exp"]).abs().mean()
    )
    # DS3 without the DS2 polymorph (fx-29 ZnS)
    assert metrics["ds3_without_ds2_polymorphs"]["excluded"] == ["fx-29"]
    assert metrics["ds3_without_ds2_polymorphs"]["models"]["pbe"]["n"] == 5
    # the recipes the CV chose, trained after cv.json was written and scored after that
    cv = json.loads((run_dir / "cv.json").read_text())
    assert metrics["selected_policy"] == cv["selected_policy"] and metrics["learning_rates"] == cv["learning_rates"]
    assert (run_dir / "cv.json").stat().st_mtime <= (run_dir / "metrics.json").stat().st_mtime
    runs = pd.read_csv(run_dir / "tables" / "adaptation_runs.csv")
    assert len(runs) == 5 * 2  # (4 policies + control) x 2 seeds
    assert (run_dir / "cv.json").stat().st_mtime <= min((run_dir / c).stat().st_mtime for c in runs["checkpoint"])
    assert not (run_dir / "models" / "cv-methods").exists()  # scratch removed
    assert _png(run_dir / "figures" / "ds3_parity.png")
    assert len(pd.read_csv(run_dir / "tables" / "ds3_predictions.csv")) == 6
    assert set(pd.read_csv(run_dir / "tables" / "ds3_errors_by_class.csv")["anion_class"]) >= {"oxide"}


def test_notebook_methods_cross_validate_select_calibrate_and_train_an_ensemble(fixture_run):
    _completed(fixture_run, "methods")
    run_dir = _completed(fixture_run, "final-models-and-ds3")
    methods = load_methods(run_dir)  # methods.json, and the final fit under "final"
    assert methods["candidates"] == ["delta", "delta_composition", "multifidelity", "delta_composition_huber", *CHGNET]
    mae = methods["cv_mae_all_ds2"]
    assert set(mae) - {f"{c}{suffix}" for suffix in ("", "_trees", "_ctrees") for c in CHGNET} == {
        "delta",
        "delta_composition",
        "multifidelity",
        "delta_composition_huber",
        "delta_trees",
        "delta_composition_trees",
        "multifidelity_trees",
        "delta_composition_huber_trees",
        "delta_ctrees",  # the same, the trees learning the correction to PBE
        "delta_composition_ctrees",
        "multifidelity_ctrees",
        "delta_composition_huber_ctrees",
    }
    # every candidate also scored on each label source's rows (the fixture's DS2 has both sources)
    by_source = methods["cv_mae_by_label_source"]
    assert set(by_source) == {"borlido2019", "megnet2021"} and all(set(v) == set(mae) for v in by_source.values())
    fits = pd.read_csv(run_dir / "tables" / "methods_cv_fits.csv")
    assert set(fits["method"]) >= {"delta_composition_huber"}  # its members were fitted on every fold
    assert methods["selected"] == min(mae, key=mae.get)  # chosen by CV MAE alone
    oof = pd.read_csv(run_dir / "tables" / "methods_cv_predictions.csv")
    # each member's out-of-fold predictions are kept: their mean is the ensemble's prediction
    members = pd.read_csv(run_dir / "tables" / "methods_cv_delta_members.csv")
    assert sorted(members["member"].unique()) == list(range(methods["settings"]["members"]))
    mean = members.groupby("material_id")["prediction"].mean()
    ens = oof[oof["model"] == "ens_delta"].set_index("material_id")["prediction"]
    assert np.allclose(mean.loc[ens.index], ens)
    trees = pd.read_csv(run_dir / "tables" / "methods_cv_trees.csv").set_index("material_id")["prediction"]
    hybrid = oof[oof["model"] == "ens_delta_trees"].set_index("material_id")["prediction"]
    assert np.allclose(hybrid, 0.5 * ens.loc[hybrid.index] + 0.5 * trees.loc[hybrid.index])
    ctrees = pd.read_csv(run_dir / "tables" / "methods_cv_ctrees.csv").set_index("material_id")["prediction"]
    chybrid = oof[oof["model"] == "ens_delta_ctrees"].set_index("material_id")["prediction"]
    assert np.allclose(chybrid, 0.5 * ens.loc[chybrid.index] + 0.5 * ctrees.loc[chybrid.index])
    assert not np.allclose(ctrees.loc[trees.index], trees)  # two tree models, not one table twice
    # the CV MAE with fewer members: all of them is the candidate's own CV MAE, a difference of 0
    sizes = pd.read_csv(run_dir / "tables" / "methods_ensemble_size.csv")
    single = {n for n in mae if n.startswith("chgnet_frozen")}  # kernel ridge: one model, no members
    assert set(sizes["method"]) == set(mae) - single and set(sizes["members"]) == {1, 2}
    full = sizes[sizes["members"] == 2].set_index("method")
    assert np.allclose(full["mae"], pd.Series(mae).loc[full.index]) and (full["vs_all_members"] == 0).all()
    assert "Is the ensemble large enough?" in (run_dir / "report.md").read_text()
    assert (oof.groupby("model")["material_id"].nunique() == 23).all() and (oof["std"] >= 0).all()
    # a hybrid is its network averaged with the trees: mean halfway, spread from both
    net, hyb = (oof[oof["model"] == m].set_index("material_id") for m in ("ens_delta", "ens_delta_trees"))
    trees = 2 * hyb["prediction"] - net["prediction"]
    assert np.allclose(hyb["std"] ** 2, 0.5 * net["std"] ** 2 + 0.25 * (net["prediction"] - trees) ** 2)
    cal = methods["calibration"]
    assert cal["scale"] > 0 and 0 <= cal["within_1sd"] <= cal["within_2sd"] <= 1
    # the selected recipe trained on all of DS2: one checkpoint per member (for a CHGNet selection, its
    # stored head), written after the CV record
    if methods["backbone"] == "cgcnn":
        members = [run_dir / c for c in methods["final"]["checkpoints"]]
        assert len(members) == methods["settings"]["members"] == 2 and all(m.is_file() for m in members)
    else:
        folder = run_dir / methods["final"]["backbone"]
        members = [folder / f for f in json.loads((folder / "backbone.json").read_text())["files"]]
        assert members and all(m.is_file() for m in members)
    assert sorted(methods["final"]["train_ids"]) == sorted(
        pd.read_csv(run_dir / "tables" / "cv_predictions.csv")["material_id"].unique()
    )
    assert (run_dir / "cv.json").stat().st_mtime <= min(m.stat().st_mtime for m in members)
    # DS3: the ensemble row, its spread and the coverage of its calibrated interval
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert math.isfinite(metrics["models"]["ensemble"]["mae"]) and metrics["models"]["ensemble"]["n"] == 6
    assert 0 <= metrics["ensemble_ds3_coverage"]["within_1sd"] <= metrics["ensemble_ds3_coverage"]["within_2sd"] <= 1
    predictions = pd.read_csv(run_dir / "tables" / "ds3_predictions.csv")
    assert (predictions["std_ensemble"] > 0).all()


def test_notebook_trust_calibrates_intervals_and_the_domain_out_of_fold(fixture_run):
    run_dir = _completed(fixture_run, "trust")
    summary = json.loads((run_dir / "trust.json").read_text())
    assert summary["selected"] == load_methods(run_dir)["selected"] and summary["level"] == 0.9
    # the fixture profile's 3 folds, and one per anion class of at least 5 DS2 materials (the rarer ones together)
    held_out = summary["held_out_classes"]
    assert summary["folds"] == {"grouped": 3, "chemistry_shift": 3, "class_held_out": len(held_out)}
    assert len(held_out) >= 2
    oof = pd.read_csv(run_dir / "tables" / "trust_predictions.csv", dtype={"material_id": str})
    # every DS2 material once per protocol and PBE input, out of fold
    assert (oof.groupby(["protocol", "pbe_input"])["material_id"].nunique() == 23).all() and len(oof) == 6 * 23
    # the class-held-out stress test: each fold's classes are absent from its training set
    for (fold, _), part in oof[oof["protocol"] == "class_held_out"].groupby(["fold", "pbe_input"]):
        assert sorted(set(part["anion_class"])) == held_out[fold]
        assert not set(part["anion_class"]) & set(oof.loc[~oof["material_id"].isin(part["material_id"]), "anion_class"])
    assert (oof["lo"] >= 0).all() and (oof["lo"] <= oof["prediction"]).all() and (oof["prediction"] <= oof["hi"]).all()
    assert (oof["domain_note"].fillna("") == "").eq(oof["in_domain"]).all()  # a note exactly when out of domain
    assert set(oof.loc[oof["pbe_input"] == "predicted", "category"]) == {"pbe_predicted"}
    # a protocol's out-of-fold table keeps every member's prediction beside their mean (fits read back from the cache)
    from cgcnn.study import profiles, trust

    fold = trust.fit_protocol(trust.prepare(run_dir, profiles.load_profile(run_dir / "config.json")), "grouped")
    if not load_methods(run_dir)["network"].startswith("chgnet_frozen"):  # kernel ridge has no members
        members = fold[[f"member_{k}" for k in range(load_methods(run_dir)["settings"]["members"])]]
        assert np.allclose(members.mean(axis=1), fold["cgcnn_mean"])
    coverage = pd.read_csv(run_dir / "tables" / "trust_coverage.csv")
    assert set(coverage["protocol"]) == {"grouped", "chemistry_shift", "class_held_out"}
    assert coverage["coverage"].between(0, 1).all()
    # the same per anion class (every DS2 material once per protocol), and both calibrations compared
    by_class = pd.read_csv(run_dir / "tables" / "trust_coverage_by_class.csv")
    assert (by_class.groupby("protocol")["n"].sum() == 23).all() and by_class["coverage"].between(0, 1).all()
    conditioning = pd.read_csv(run_dir / "tables" / "trust_conditioning.csv")
    assert set(conditioning["min_class_scores"]) == {0, summary["settings"]["min_class_scores"]}
    assert summary["min_class_scores"] in set(conditioning["min_class_scores"])
    assert set(conditioning["calibrated_on"]) == {"chemistry_shift + class_held_out + grouped"}  # all: one pool
    # chemistry-shift folds hold out whole composition clusters: no test formula's chemistry in training
    frame = pd.read_csv(run_dir / "bucket" / "processed" / "ds2.csv", dtype={"material_id": str}).set_index(
        "material_id"
    )
    for _, fold in oof[oof["protocol"] == "chemistry_shift"].groupby("fold"):
        test = set(frame.loc[fold["material_id"], "formula"])
        train = set(frame.drop(index=fold["material_id"])["formula"])
        assert not test & train
    # the calibration that ships: intervals and domain fitted on all of DS2
    from cgcnn.prediction.trust import load_trust

    trust = load_trust(run_dir / "models" / "trust")
    assert trust is not None and trust.domain.space.reference.shape[0] == 23
    assert sum(trust.domain.counts.values()) >= 23 and trust.intervals.normaliser == summary["normaliser"]
    assert trust.intervals.min_class_scores == summary["min_class_scores"]
    # calibrated on every protocol (the setting's default): one score per protocol, material and PBE input
    protocols = ["grouped", "chemistry_shift", "class_held_out"]
    assert list(trust.info["calibrated_on"]) == summary["settings"]["calibrate_on"] == protocols
    assert sum(len(v) for v in trust.intervals.scores.values()) == 3 * 2 * 23
    ds2 = pd.read_csv(run_dir / "bucket" / "processed" / "ds2.csv")
    assert trust.domain.max_pbe_ev >= ds2["bg_pbe"].max() - 1e-9  # the PBE-range rule is on
    suspicious = pd.read_csv(run_dir / "tables" / "suspicious_labels.csv")
    assert summary["suspicious_labels"]["n"] == len(suspicious) and (suspicious["reasons"].str.len() > 0).all()
    # DS3 (the final step): the ensemble's interval and domain flag, scored once
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ds3 = metrics["ensemble_ds3_trust"]
    assert ds3["all"]["n"] == 6 and 0 <= ds3["all"]["coverage"] <= 1 and ds3["all"]["mean_width_ev"] > 0
    assert ds3["in_domain"]["n"] + ds3["out_of_domain"]["n"] == 6
    predictions = pd.read_csv(run_dir / "tables" / "ds3_predictions.csv")
    assert (predictions["lo_ensemble"] <= predictions["pred_ensemble"]).all()
    report = (run_dir / "report.md").read_text()
    assert "## Can a prediction be trusted?" in report and "Coverage per anion class" in report
    assert f"on {len(held_out)} class-held-out folds" in report  # the stress test, in words


def test_notebook_tsne(fixture_run):
    run_dir = _completed(fixture_run, "tsne")
    for model in ("m1", "m2"):
        for layer in ("conv", "hidden"):
            assert _png(run_dir / "figures" / f"tsne_{model}_{layer}.png")
            coords = pd.read_csv(run_dir / "tables" / f"tsne_{model}_{layer}.csv")
            assert coords["dataset"].value_counts().to_dict() == {"DS2": 23, "DS3": 6}
            assert np.isfinite(coords[["x", "y"]].to_numpy()).all()
    assert set(coords.loc[coords["dataset"] == "DS3", "formula"]) == {"ZnTe", "GaN", "CdSe", "ZnS", "InN", "SnO2"}
    # CHGNet's representation, mapped the same way (the run compared CHGNet candidates)
    assert _png(run_dir / "figures" / "tsne_chgnet_crystal.png")
    chgnet = pd.read_csv(run_dir / "tables" / "tsne_chgnet_crystal.csv")
    assert chgnet["dataset"].value_counts().to_dict() == {"DS2": 23, "DS3": 6}


def test_notebook_report(fixture_run):
    run_dir = _completed(fixture_run, "report")
    text = (run_dir / "report.md").read_text()
    for heading in (
        "## Data",
        "## Protocol",
        "## Cross-validation on DS2",
        "## DS3",
        "## What the numbers show",
        "## Figures",
    ):
        assert heading in text
    cv = pd.read_csv(run_dir / "tables" / "methods_cv_metrics.csv", index_col="model")
    assert set(cv.index) == set(ALL_MODELS) - {"hse06", "g0w0", "m1", "ensemble"} | set(ENSEMBLE_CANDIDATES)
    assert f"M2 has MAE {cv.loc['m2', 'mae']:.3f} eV" in text  # written from the numbers
    methods = json.loads((run_dir / "methods.json").read_text())
    selected = f"ens_{methods['selected']}"
    assert f"has CV MAE {cv.loc[selected, 'mae']:.3f} eV" in text and "## Beyond fine-tuning" in text
    # the backbone question, from methods.json's paired differences, and CHGNet's t-SNE map
    assert "## Does the backbone matter?" in text and "**backbone, alone: CHGNet − CGCNN**" in text
    assert "![tsne chgnet crystal](figures/tsne_chgnet_crystal.png)" in text
    assert all(f"| {methods_label} |" in text for methods_label in _labels(BACKBONE_ROWS))  # their DS3 rows
    for line in text.splitlines():
        if line.startswith("!["):
            assert _png(run_dir / line[line.index("(") + 1 : -1])
    # a fixture run says its numbers mean nothing (at the top and above the findings), names the run
    # folder, and says why an empty column is empty instead of printing None
    assert text.splitlines()[0] == f"# Band-gap domain adaptation — report of run `{run_dir.name}`"
    assert text.count("> **These numbers mean nothing.** This run uses the bundled fixture") == 2
    assert "| None |" not in text and "| nan |" not in text
    trust = json.loads((run_dir / "trust.json").read_text())
    if all(row["n_in"] == 0 for row in trust["separation"]):  # on the fixture every material is out of domain
        assert "No material is in domain under any protocol: the rule" in text


def test_rerun_with_unchanged_inputs_skips_every_stage(fixture_run):
    code, _, run_dir = fixture_run
    assert code == 0
    lines: list[str] = []
    args = rp.parse_args(["--output", str(run_dir.parent), "--run-id", run_dir.name, "--device", "cpu"])
    assert rp.Pipeline(args, echo=lines.append).run() == 0
    assert sum("skipped (inputs unchanged)" in line for line in lines) == len(NOTEBOOKS)


def test_a_notebook_opened_by_hand_runs_on_the_last_run_with_its_default_parameters(fixture_run, tmp_path):
    """What a user does after the README's first command: open a notebook in JupyterLab and run
    it.  Jupyter runs it from its own folder, with the parameters cell as written: run_dir
    ``../runs/latest``, the link the runner left to the run it made."""
    import shutil

    import papermill as pm

    run_dir = _completed(fixture_run, "report")
    assert (run_dir.parent / rp.LATEST).resolve() == run_dir.resolve()
    repo = tmp_path / "checkout"  # the layout of the repository: notebook folders beside runs/
    shutil.copytree(run_dir.parent, repo / "runs", symlinks=True, ignore=shutil.ignore_patterns(".cache"))
    (repo / "03-insights").mkdir()
    shutil.copy(REPO / NOTEBOOKS["report"], repo / "03-insights")
    (repo / "runs" / rp.LATEST / "report.md").unlink()
    pm.execute_notebook(
        str(repo / NOTEBOOKS["report"]),
        str(tmp_path / "executed.ipynb"),
        kernel_name="python3",
        cwd=str(repo / "03-insights"),
        progress_bar=False,
    )

    def body(path):  # the line naming the code and time comes from environment.json, rewritten by every run
        return [line for line in path.read_text().splitlines() if not line.startswith("Profile `")]

    assert body(repo / "runs" / run_dir.name / "report.md") == body(run_dir / "report.md")


@pytest.mark.parametrize("rel", list(NOTEBOOKS.values()))
def test_committed_notebook_has_a_tagged_parameters_cell_and_no_outputs(rel):
    nb = nbformat.read(REPO / rel, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert {"run_dir", "config"} <= {n.id for n in ast.walk(ast.parse(code[0].source)) if isinstance(n, ast.Name)}
    defaults = {
        t.id: node.value.value
        for node in ast.parse(code[0].source).body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for t in node.targets
    }
    # by hand, a notebook reads the last run of the README's first command (runs/latest) and its settings
    assert rp.parse_args([]).output == "runs" and rel.count("/") == 1  # ../runs from the notebook's folder
    assert defaults["run_dir"] == f"../runs/{rp.LATEST}" and defaults["config"] == f"../runs/{rp.LATEST}/config.json"
    for cell in code:
        assert cell.get("outputs") == [] and cell.get("execution_count") is None, (
            f"{rel}: outputs are saved; strip them (nbstripout)"
        )


def test_every_notebook_is_a_stage_of_the_runner():
    on_disk = {p.relative_to(REPO).as_posix() for p in REPO.glob("0[1-3]-*/*.ipynb")}
    assert on_disk == set(NOTEBOOKS.values()) == {s.relpath for s in rp.STAGES}
    assert [s.name for s in rp.STAGES] == list(NOTEBOOKS)


def test_ship_model_ships_the_run_s_ensemble_and_refuses_a_leak(fixture_run, tmp_path):
    run_dir = _completed(fixture_run, "final-models-and-ds3")
    models = tmp_path / "models"
    script = [
        sys.executable,
        str(REPO / "scripts" / "ship_model.py"),
        "--name",
        "ensemble",
        "--study-run",
        str(run_dir),
        "--models-dir",
        str(models),
    ]
    validation = REPO / "tests" / "fixtures" / "bucket" / "raw" / "validation_set.csv"
    proc = subprocess.run(script + ["--exclude-ids", str(validation)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    info = json.loads((models / "ensemble" / "manifest.json").read_text())
    methods = json.loads((run_dir / "methods.json").read_text())
    hybrid = methods["selected"].endswith(("_trees", "_ctrees"))
    assert (info["trees"] or {}).get("target") == methods["trees_target"]  # what the trees learnt, or no trees
    if methods["backbone"] == "cgcnn":
        assert info["method"] == methods["selected"] and info["cgcnn_members"] == 2 and info["members"] == 2 + hybrid
        expected = ["domain.npz", "manifest.json", "member-0.pt", "member-1.pt", "pbe-model.pt"]
    else:  # a CHGNet head: its folder beside M1 (missing PBE gaps, the domain)
        assert info["method"] == methods["selected"] and info["cgcnn_members"] == 0 and info["backbone"] == "backbone"
        expected = ["backbone", "domain.npz", "manifest.json", "pbe-model.pt"]
    expected += (["trees.skops"] if hybrid else []) + ["trust.json"]
    assert sorted(p.name for p in (models / "ensemble").iterdir()) == expected
    assert not set(pd.read_csv(validation, dtype=str)["material_id"]) & set(info["ids"]["all_labels_seen"])
    assert info["calibration"]["scale"] == methods["calibration"]["scale"]
    card = (models / "MODEL_CARD.md").read_text()
    assert "## Intended use" in card and "are not metal detectors" in card and f"Method `{info['method']}`" in card
    assert info["trust"]["level"] == 0.9 and {"trust.json", "domain.npz"} <= set(info["files"])
    assert "### Applicability domain" in card and "### Intervals (90% by default" in card
    held_out = json.loads((run_dir / "trust.json").read_text())["held_out_classes"]
    assert info["trust"]["held_out_classes"] == held_out and "In the class-held-out folds each fold holds out" in card
    # the shipped folder predicts with intervals and the domain flag, as load_model() does
    import cgcnn.prediction.shipped
    from cgcnn import load_model

    snapshot = REPO / "tests" / "fixtures" / "mp_snapshot" / "summary.jsonl.gz"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cgcnn.prediction.shipped, "models_root", lambda: models)
        wide = load_model("ensemble", device="cpu").predict(snapshot)
        narrow = load_model("ensemble", device="cpu", interval_level=0.5).predict(snapshot)
    assert list(wide.columns[-4:]) == ["prediction_lo_ev", "prediction_hi_ev", "in_domain", "domain_note"]
    assert (wide["prediction_lo_ev"] >= 0).all() and (wide["prediction_lo_ev"] <= wide["prediction_ev"]).all()
    assert (wide["prediction_ev"] <= wide["prediction_hi_ev"]).all()
    assert (
        narrow["prediction_hi_ev"] - narrow["prediction_lo_ev"] <= wide["prediction_hi_ev"] - wide["prediction_lo_ev"]
    ).all()
    assert ((wide["domain_note"] == "") == wide["in_domain"]).all()
    assert narrow[["prediction_ev", "in_domain"]].equals(
        wide[["prediction_ev", "in_domain"]]
    )  # the level changes only the bounds
    # a held-out list that contains a training id: refused in one line, the shipped folder untouched
    leak = tmp_path / "leak.csv"
    pd.DataFrame({"material_id": [info["ids"]["train"][0]]}).to_csv(leak, index=False)
    before = (models / "ensemble" / "manifest.json").read_bytes()
    proc = subprocess.run(script + ["--exclude-ids", str(leak)], capture_output=True, text=True)
    assert proc.returncode != 0 and proc.stderr.strip().startswith("error: 1 excluded id(s) were used in training")
    assert (models / "ensemble" / "manifest.json").read_bytes() == before


def test_methods_stage_resumes_after_the_fits_it_finished(fixture_run, tmp_path):
    import shutil

    from cgcnn.study import methods, profiles

    run_dir = _completed(fixture_run, "methods")
    copy, cache = tmp_path / "run", tmp_path / "cache"
    shutil.copytree(run_dir, copy)
    shutil.copytree(run_dir.parent / ".cache", cache)  # the fit cache the pipeline filled
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "cache": str(cache)}))
    before = json.loads((copy / "methods.json").read_text())
    # as if interrupted while the multi-fidelity candidate was being fitted: its members' fits are not there
    specs = [(p.parent, json.loads(p.read_text())) for p in cache.glob("fits/*/*/spec.json")]
    lost = [folder for folder, spec in specs if spec["kind"] == "member" and spec["model"].get("fidelities")]
    assert lost
    for folder in lost:
        shutil.rmtree(folder)
    kept = {p.parent.name for p in cache.glob("fits/*/*/fit.json")}
    after = methods.run_methods(copy, profiles.load_profile(copy / "config.json"), echo=lambda _: None)
    new = {p.parent.name for p in cache.glob("fits/*/*/fit.json")} - kept
    assert len(new) == len(lost)  # only the lost fits ran again; every other fit was read back
    assert after["cv_mae_all_ds2"] == before["cv_mae_all_ds2"]  # same fits, same numbers
