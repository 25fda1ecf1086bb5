"""Step 03-insights/02: ``report.md`` of a run, written from the run's own numbers (nothing typed by hand).

Sections: data (counts, sources), protocol, the cross-validation table on DS2, the DS3 table
with intervals and paired differences, errors by anion class and gap range, the table
without DS3 materials that have a DS2 polymorph, figures (parity, histories, t-SNE), and a
plain paragraph of what the numbers do and do not show, built from the intervals.

(Over 400 lines: one function per section of one document, each reading the run's records; no
section is used anywhere else, so splitting them would only scatter the report.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from cgcnn.fileio import atomic_write_text
from cgcnn.prediction.intervals import NORMALISER_NOTES
from cgcnn.study.display import display_cv_table, display_table, label
from cgcnn.study.profiles import StudyProfile
from cgcnn.study.rundir import RUN_FILES, load_cv_table, read_json, require_cv, run_paths


def _ens_label(candidate: str) -> str:
    """A methods candidate's reader's name (its key when it has none)."""
    key = f"ens_{candidate}"
    return label(key) if label(key) != key else candidate


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def markdown_table(frame: pd.DataFrame, index: bool = True) -> str:
    """A GitHub-flavoured markdown table of ``frame`` (strings as they are, floats to 3 decimals,
    a missing value — None or NaN: nothing to measure — as ``–``)."""
    df = frame.reset_index() if index else frame

    def fmt(v):
        if v is None or (isinstance(v, float) and v != v):
            return "–"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _interval_phrase(d: float, lo: float, hi: float, a: str, b: str) -> str:
    """One sentence on a paired MAE difference of ``a`` minus ``b`` and its interval."""
    if hi < 0:
        verdict = f"{a} is better than {b}: the interval excludes zero"
    elif lo > 0:
        verdict = f"{a} is worse than {b}: the interval excludes zero"
    else:
        verdict = f"the data cannot tell {a} and {b} apart: the interval includes zero"
    return f"MAE({a}) − MAE({b}) = {d:+.3f} eV [95% CI {lo:+.3f}, {hi:+.3f}]; {verdict}."


def findings(cv_table: pd.DataFrame, ds3: pd.DataFrame, best_baseline: str, n_ds3: int) -> str:
    """The plain paragraph: what the CV and DS3 numbers show, from their intervals."""

    out = []
    if "m2" in cv_table.index:
        r = cv_table.loc["m2"]
        bb = str(r.get("best_baseline", best_baseline))
        out.append(
            f"On DS2 (grouped cross-validation, {int(r['n'])} materials), M2 has MAE {r['mae']:.3f} eV "
            f"[{r['mae_lo']:.3f}, {r['mae_hi']:.3f}]; the best baseline is {label(bb)} with "
            f"{cv_table.loc[bb, 'mae']:.3f} eV. "
            + _interval_phrase(
                r["diff_vs_best_baseline"],
                r["diff_vs_best_baseline_lo"],
                r["diff_vs_best_baseline_hi"],
                "M2",
                label(bb),
            )
        )
        if pd.notna(r.get("diff_vs_control")):
            out.append(
                "Against the control trained on DS2 alone: "
                + _interval_phrase(
                    r["diff_vs_control"], r["diff_vs_control_lo"], r["diff_vs_control_hi"], "M2", "the control"
                )
            )
    if "m2" in ds3.index:
        r = ds3.loc["m2"]
        out.append(
            f"On DS3 ({n_ds3} materials, scored once with the models the CV chose), M2 has MAE {r['mae']:.3f} eV "
            f"[{r['mae_lo']:.3f}, {r['mae_hi']:.3f}]"
            + "".join(
                f", {label(m)} {ds3.loc[m, 'mae']:.3f} eV" for m in ("hse06", "g0w0", best_baseline) if m in ds3.index
            )
            + ". With so few materials the intervals are wide: differences smaller than about half their width are not evidence."
        )
        if pd.notna(r.get("diff_vs_best_baseline")):
            out.append(
                "On DS3: "
                + _interval_phrase(
                    r["diff_vs_best_baseline"],
                    r["diff_vs_best_baseline_lo"],
                    r["diff_vs_best_baseline_hi"],
                    "M2",
                    label(best_baseline),
                )
            )
    return "\n\n".join(out)


GOALS = {"cv_mae": 0.33, "ds3_mae": 0.40}  # the methods issue's goals for the shipped ensemble (eV)


def ensemble_findings(cv_table: pd.DataFrame, ds3: pd.DataFrame, methods: dict, coverage: dict) -> str:
    """What the selected ensemble's numbers show: against the best baseline (CV and DS3),
    the goals (met or missed, plainly), and how well its spread is calibrated."""
    if not methods:
        return ""
    sel = f"ens_{methods['selected']}"

    out = []
    if sel in cv_table.index:
        r = cv_table.loc[sel]
        bb = str(r.get("best_baseline", ""))
        goal = "meets" if r["mae"] <= GOALS["cv_mae"] else "misses"
        out.append(
            f"The selected method, {label(sel)}, has CV MAE {r['mae']:.3f} eV [{r['mae_lo']:.3f}, {r['mae_hi']:.3f}]; "
            f"it {goal} the goal of {GOALS['cv_mae']:.2f} eV. "
            + (
                _interval_phrase(
                    r["diff_vs_best_baseline"],
                    r["diff_vs_best_baseline_lo"],
                    r["diff_vs_best_baseline_hi"],
                    "the ensemble",
                    label(bb),
                )
                if bb and pd.notna(r.get("diff_vs_best_baseline"))
                else ""
            )
        )
    if "ensemble" in ds3.index:
        r = ds3.loc["ensemble"]
        goal = "meets" if r["mae"] <= GOALS["ds3_mae"] else "misses"
        text = (
            f"On DS3 the ensemble (trained on all of DS2, called with the materials' PBE gaps) has MAE {r['mae']:.3f} eV "
            f"[{r['mae_lo']:.3f}, {r['mae_hi']:.3f}]; it {goal} the goal of {GOALS['ds3_mae']:.2f} eV"
        )
        if "hse06" in ds3.index:
            text += f" (HSE06: {ds3.loc['hse06', 'mae']:.3f} eV)"
        out.append(text + ".")
    cal = methods.get("calibration", {})
    if cal:
        text = (
            f"Uncertainty: the members' spread is multiplied by {cal['scale']:.2f} (fitted on out-of-fold predictions); "
            f"out of fold, {cal['within_1sd']:.0%} of the materials lie within ±1σ and {cal['within_2sd']:.0%} within ±2σ "
            f"(normal errors: 68 % and 95 %; before scaling {cal['within_1sd_raw']:.0%} and {cal['within_2sd_raw']:.0%})"
        )
        if coverage:
            text += f"; on DS3, {coverage['within_1sd']:.0%} and {coverage['within_2sd']:.0%}"
        out.append(text + ".")
    return "\n\n".join(out)


def _methods_section(run: Path, methods: dict) -> list[str]:
    if not methods:
        return []
    s = methods["settings"]
    fits = run / "tables" / "methods_calibration.csv"
    rows = [
        "## Beyond fine-tuning: PBE-aware and multi-fidelity ensembles",
        f"Candidates: {'; '.join(_ens_label(c) for c in methods['candidates'])}. Each CGCNN candidate is an ensemble of "
        f"{s['members']} members (seeds) fine-tuned from M1 on the same outer folds, early stopping on the inner split "
        f"(at most {s['train']['epochs']} epochs, "
        + (f"patience {s['train']['patience']}" if s["train"]["patience"] is not None else "no early stop")
        + f", lr {s['train']['lr']:g}). "
        "Each candidate is also scored averaged (equal weights, fixed in advance) with boosted trees on Magpie composition "
        "+ the PBE gap, refitted on the same folds: trees learning the gap (`_trees`) and trees learning the "
        "correction experiment − PBE (`_ctrees`). "
        f"Selected by CV MAE: **{_ens_label(methods['selected'])}**. "
        "DS2 materials without a PBE gap read M1's prediction instead ("
        + ", ".join(f"{k}: {v}" for k, v in methods.get("pbe_sources_ds2", {}).items())
        + ").",
    ]
    if methods.get("cv_mae_by_label_source"):
        table = pd.DataFrame({"all DS2": methods["cv_mae_all_ds2"], **methods["cv_mae_by_label_source"]})
        rows += [
            "CV MAE (eV) of every candidate on all of DS2 and on the rows each experimental source labelled "
            "(same folds; `_huber`: trained with a Huber loss, robust to a few wrong labels; kept only if "
            "selected on all of DS2):",
            markdown_table(table.rename_axis("candidate")),
        ]
    if fits.is_file():
        rows += [
            "Calibration of the spread on out-of-fold predictions (fraction of materials within ±1σ / ±2σ, before and after scaling):",
            markdown_table(pd.read_csv(fits, index_col=0)),
        ]
    sizes = run / "tables" / "methods_ensemble_size.csv"
    if sizes.is_file():
        rows += [
            "Is the ensemble large enough? CV MAE (eV) with only the first k members of each candidate (the same "
            "seeds and fits), and MAE(k) − MAE(all) on the same materials with its paired bootstrap 95 % interval:",
            markdown_table(pd.read_csv(sizes), index=False),
        ]
    return rows


BACKBONE_NAMES = {"cgcnn": "CGCNN", "chgnet": "CHGNet"}


def _backbone_section(methods: dict) -> list[str]:
    """Does the backbone matter, and does fine-tuning help either backbone over frozen features?"""
    rows = methods.get("backbone_question") or []
    if not rows:
        return []
    out = [
        "## Does the backbone matter? CGCNN beside a pretrained universal potential (CHGNet)",
        "CHGNet (pretrained on ~1.5 M Materials Project calculations) gives each crystal a representation: its atom "
        "features after the last interaction block, averaged over atoms (the input of its energy readout). Its "
        "candidates learn the correction to PBE on the same folds as everything else: a kernel ridge head on the frozen "
        "representation (with and without Magpie), and its readout — or its last interaction block and readout — "
        "fine-tuned. Each side of a comparison is the one with the lowest CV MAE among its kind. Paired differences "
        "over the DS2 materials both predict, bootstrap 95 % intervals:",
    ]
    for r in rows:
        a, b = _ens_label(r["a"].removeprefix("ens_")), _ens_label(r["b"].removeprefix("ens_"))
        if not r["a"].startswith("ens_"):
            a, b = label(r["a"]), label(r["b"])
        out.append(
            f"- **{r['question']}** ({r['n']} materials): " + _interval_phrase(r["diff"], r["lo"], r["hi"], a, b)
        )
    if methods.get("backbone", "cgcnn") != "cgcnn":
        name = BACKBONE_NAMES.get(methods["backbone"], methods["backbone"])
        out.append(f"The selected model is on the {name} backbone; it ships as selected.")
    return out


PROTOCOL_NAMES = {"grouped": "grouped", "chemistry_shift": "chemistry-shift", "class_held_out": "class-held-out"}


def _class_rows(tables: Path, trust: dict) -> list[str]:
    """Per anion class: which calibration was kept, and its cross-fitted coverage by class."""
    if "conditioning" not in trust or not (tables / "trust_coverage_by_class.csv").is_file():
        return []  # a run from before the classes were measured
    cells, setting = trust["min_class_scores"], trust["settings"].get("min_class_scores")
    if setting == 0:
        kept = "per-class quantiles are off in this run (`trust.min_class_scores = 0`): the domain categories alone"
    elif cells:
        kept = (
            f"kept: each anion class with at least {cells} scores in its domain category has its own quantile, the "
            "others use their category's"
        )
    else:
        kept = "kept: the domain categories alone"
    cond = pd.DataFrame(trust["conditioning"])
    pools = list(dict.fromkeys(cond["calibrated_on"]))
    other = f" (rows calibrated on {', '.join(pools[1:])} are for comparison)" if len(pools) > 1 else ""
    return [
        "Does the interval hold within each material class (anion class)? The calibration by domain category alone "
        "and by category and anion class, cross-fitted; `class_gap` is the size-weighted mean |coverage − level| over "
        "the classes of one protocol (MP's PBE given), `class_gap_both` over every protocol. Of the calibrations on "
        f"the configured folds ({pools[0]}){other}, the one with the lower `class_gap_both` is {kept}.",
        markdown_table(cond, index=False),
        "Coverage per anion class with the kept calibration (MP's PBE given):",
        markdown_table(pd.read_csv(tables / "trust_coverage_by_class.csv").drop(columns=["level"]), index=False),
    ]


def listed(words: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join(words) if len(words) < 3 else ", ".join(words[:-1]) + " and " + words[-1]


def _held_out_words(trust: dict) -> str:
    """The class-held-out protocol in words ('' for a run without it)."""
    classes = trust.get("held_out_classes") or []
    if not classes:
        return ""
    return (
        f", and on {len(classes)} class-held-out folds "
        "(each holding out whole anion classes: "
        + "; ".join(" + ".join(c) for c in classes)
        + "), where a test material's whole class is new"
    )


def empty_domain_note(separation: pd.DataFrame, rules: pd.DataFrame) -> str:
    """Why the in-domain columns of the separation table are empty, when no material is in
    domain under some protocol ('' otherwise): the rule that flags every material, if one does."""
    empty = separation[separation["n_in"] == 0]
    if empty.empty:
        return ""
    reasons = {}
    for row in empty.itertuples(index=False):
        every = rules[(rules["protocol"] == row.protocol) & (rules["n"] == row.n_out)]["rule"].tolist()
        why = f"the rule '{every[0]}' flags all {int(row.n_out)} materials" if every else "the rules together flag all"
        reasons[PROTOCOL_NAMES.get(row.protocol, row.protocol)] = why
    if len(set(reasons.values())) == 1:  # one reason for every such protocol: say it once
        where = "any protocol" if len(empty) == len(separation) else listed(list(reasons))
        text = f"No material is in domain under {where}: {next(iter(reasons.values()))}"
    else:
        text = "No material is in domain under " + "; ".join(f"{p} ({why})" for p, why in reasons.items())
    return (
        text + ", so the MAE in domain and the difference out − in cannot be measured (`–`). The domain is "
        "learnt from the training materials: with few of them, most elements are rare."
    )


def fixture_note(profile_name: str, bucket: str) -> str:
    """A warning that the run's numbers mean nothing, for a run on the bundled fixture or with
    the ``fixture`` profile ('' otherwise)."""
    on_fixture = Path(str(bucket)).as_posix().rstrip("/").endswith("tests/fixtures/bucket")
    if not on_fixture and profile_name != "fixture":
        return ""
    what = []
    if on_fixture:
        what.append(
            "the bundled fixture (`tests/fixtures/`: about 40 materials with textbook gaps, written for the tests)"
        )
    if profile_name == "fixture":
        what.append("the `fixture` profile (tiny models trained for a few epochs)")
    return (
        f"> **These numbers mean nothing.** This run uses {' and '.join(what)}: it checks that every step of the "
        "study runs end to end, not how well any model predicts band gaps. For results, run on the real data "
        "(README, 'Two commands for a fresh machine') or read the committed reports of real-data runs (`reports/`)."
    )


def _backbone_coverage_rows(trust: dict) -> list[str]:
    """The best CHGNet candidate's cross-fitted coverage, when the selection is on CGCNN."""
    rows = trust.get("backbone_coverage")
    if not rows:
        return []
    table = pd.DataFrame(rows)
    name = _ens_label(str(table["model"].iloc[0]))
    return [
        f"The same protocols and calibration for the best CHGNet candidate ({name}): does the interval hold on "
        "the other backbone?",
        markdown_table(table.drop(columns=[c for c in ("level", "model") if c in table]), index=False),
    ]


def _trust_section(run: Path, trust: dict, ds3_trust: dict | None, below_pbe_ev: float) -> list[str]:
    """Intervals, applicability domain and suspicious labels (the trust step and DS3)."""
    if not trust:
        return []
    tables = run_paths(run)["tables"]
    st = trust["settings"]
    empty = empty_domain_note(pd.DataFrame(trust["separation"]), pd.DataFrame(trust["rules"]))
    rows = [
        "## Can a prediction be trusted? Intervals, applicability domain, suspicious labels",
        f"The selected recipe was refitted on the {trust['folds']['grouped']} grouped folds and on "
        f"{trust['folds']['chemistry_shift']} chemistry-shift folds (k-means on Magpie composition, {st['clusters']} "
        "clusters, whole clusters held out: test materials are new chemistry)"
        + _held_out_words(trust)
        + ". Every test material was predicted with "
        "its MP PBE gap (`given`) and with M1's prediction of it (`predicted`, a user who gives none). The "
        f"{trust['level']:.0%} intervals are normalised split-conformal (normaliser `{trust['normaliser']}`: "
        f"{NORMALISER_NOTES.get(trust['normaliser'], trust['normaliser'])}; chosen by "
        "the narrowest cross-fitted width: "
        + ", ".join(f"{k} {v:.2f} eV" for k, v in trust["normaliser_widths_ev"].items())
        + "), calibrated per domain category on the out-of-fold errors of the "
        + listed([PROTOCOL_NAMES.get(p, p) for p in trust.get("calibrated_on") or st.get("calibrate_on", [])])
        + " folds; coverage is cross-fitted (each fold scored by a calibration that never saw its materials) and "
        "measured on every protocol.",
        markdown_table(pd.read_csv(tables / "trust_coverage.csv").drop(columns=["level"]), index=False),
        *_backbone_coverage_rows(trust),
        *_class_rows(tables, trust),
        f"Out of domain: an element in fewer than {st['min_element_count']} training materials, a nearest training "
        f"crystal in M1's feature space farther than {trust['distance_threshold']:.2f} (the "
        f"{st['distance_percentile']:g}th percentile of the grouped out-of-fold distances), a predicted PBE gap, or a "
        f"predicted gap below {st['near_zero_ev']:g} eV or above the training range. MAE in vs out of domain "
        "(MP's PBE given; difference out − in with its bootstrap 95 % interval):",
        markdown_table(pd.DataFrame(trust["separation"]), index=False),
        *([empty] if empty else []),
        "What each rule flags (a row can be flagged by several):",
        markdown_table(pd.DataFrame(trust["rules"]), index=False),
    ]
    if ds3_trust:
        d = ds3_trust
        rows.append(
            f"On DS3 (scored once, at the end): the {trust['level']:.0%} interval covers {d['all']['coverage']:.1%} of "
            f"{d['all']['n']} materials (mean width {d['all']['mean_width_ev']:.2f} eV); MAE "
            + (f"{d['in_domain']['mae']:.3f} eV" if d["in_domain"]["mae"] is not None else "n/a")
            + f" in domain ({d['in_domain']['n']}) vs "
            + (f"{d['out_of_domain']['mae']:.3f} eV" if d["out_of_domain"]["mae"] is not None else "n/a")
            + f" out of domain ({d['out_of_domain']['n']})"
            + (
                f", difference {d['diff_out_minus_in']:+.3f} [{d['diff_lo']:+.3f}, {d['diff_hi']:+.3f}] eV."
                if d.get("diff_out_minus_in") is not None
                else "."
            )
        )
    sus = trust["suspicious_labels"]
    rows.append(
        f"**Suspicious DS2 labels: {sus['n']}** ("
        + ", ".join(f"{k}: {v}" for k, v in sus["by_reason"].items())
        + f"; sources disagreeing by more than the ETL's threshold, a label more than {below_pbe_ev:g} eV below "
        f"its PBE gap, or an out-of-fold error beyond {st['beyond_interval']:g}x the interval's half-width). Kept in "
        "training; all of them in `tables/suspicious_labels.csv`, those with two or more reasons here:"
    )
    table = pd.read_csv(tables / "suspicious_labels.csv")
    rows.append(markdown_table(table[table["n_reasons"] >= 2].drop(columns=["n_reasons"]), index=False))
    return rows


def _figures(run: Path) -> list[tuple[str, str]]:
    wanted = [
        ("ds3_parity.png", "DS3 parity"),
        ("m1_history.png", "M1 training history"),
        ("adaptation_histories.png", "Final adaptation fits"),
    ]
    figs = [(f"figures/{name}", title) for name, title in wanted if (run / "figures" / name).is_file()]
    figs += [(f"figures/{p.name}", p.stem.replace("_", " ")) for p in sorted((run / "figures").glob("tsne_*.png"))]
    return figs


def write_report(run_dir: str | os.PathLike, profile: StudyProfile) -> Path:
    """Write ``<run>/report.md`` from the run's tables and JSON files; returns its path."""
    run = Path(run_dir)
    paths = run_paths(run)
    cv = require_cv(run)
    name = run.resolve().name  # the folder's own name, also when reached through runs/latest or "."
    metrics = _read_json(paths["metrics"])
    config, env, etl = (
        _read_json(run / "config.json"),
        _read_json(run / "environment.json"),
        _read_json(paths["data"] / "etl.json"),
    )
    tables = paths["tables"]
    cv_table = load_cv_table(run)
    ds3 = pd.read_csv(tables / "ds3_metrics.csv", index_col="model")
    ds3_np = pd.read_csv(tables / "ds3_metrics_without_ds2_polymorphs.csv", index_col="model")
    best = metrics.get("best_baseline_by_cv", "pbe_linear")
    m1 = (
        pd.read_csv(tables / "m1_ds1_metrics.csv", index_col="split")
        if (tables / "m1_ds1_metrics.csv").is_file()
        else None
    )
    proto = cv["protocol"]
    methods = read_json(paths["methods"]) or {}
    counts = etl.get("counts", {})
    warning = fixture_note(profile.name, config.get("inputs", {}).get("bucket", ""))
    parts = [
        f"# Band-gap domain adaptation — report of run `{name}`",
        *([warning] if warning else []),
        f"Profile `{profile.name}`; code {env.get('git_sha', 'unknown')}; created {env.get('created', '?')} on "
        f"{env.get('platform', '?')} ({env.get('cpu_count', '?')} CPUs, GPU: {env.get('gpu') or 'none'}).",
        "## Data",
        f"Raw inputs: `{config.get('inputs', {}).get('bucket', '?')}`; materials: `{config.get('inputs', {}).get('materials', '?')}`.",
        markdown_table(
            pd.DataFrame(
                {"materials": {k.upper(): v for k, v in counts.items() if k in ("ds1", "ds2", "ds3")}}
            ).rename_axis("dataset")
        ),
        "## Protocol",
        f"DS2 is split into {proto['folds']} folds grouped by {proto['grouped_by']} (stratified by gap), repeated "
        f"{proto['repeats']} time(s) (seed {proto['seed']}). Inside each fold, {proto['inner_val_fraction']:.0%} of the "
        "training formulas form an inner validation split that stops training early and picks each model's learning rate "
        "and M2's freeze policy, so no out-of-fold prediction comes from a model chosen on its own test fold. Baselines "
        "are scored on the same folds; the boosted trees' hyper-parameters are chosen by inner CV. The CV table and the "
        f"chosen recipes were written to `{RUN_FILES['cv'].path}` before DS3 was touched. M2's policy: `{cv['selected_policy']}`; "
        "learning rates: " + ", ".join(f"{k} {v:g}" for k, v in cv["learning_rates"].items()) + ". "
        f"Final models: every recipe trained on all of DS2 once per seed ({', '.join(map(str, metrics.get('seeds', [])))}); "
        "a model's DS3 prediction is the mean over its seeds.",
    ]
    if m1 is not None:
        parts += ["M1 on the DS1 splits (PBE gaps, eV):", markdown_table(m1[["mae", "rmse", "r2", "n"]])]
    parts += [
        *_methods_section(run, methods),
        *_backbone_section(methods),
        "## Cross-validation on DS2 (out of fold, eV)",
        "Rows are paired: the materials every model predicts (DS2 materials without a PBE gap have no PBE baseline "
        "prediction and are left out of every row). Δ: paired MAE difference with its bootstrap 95% interval (negative = better).",
        markdown_table(display_cv_table(cv_table), index=False),
        "## DS3 (experimental gaps; scored once)",
        f"Best baseline by CV MAE: {label(best)}. MAE intervals: bootstrap over the DS3 materials.",
        markdown_table(display_table(ds3), index=False),
        f"Without the DS3 materials that have a polymorph in DS2 ({', '.join(metrics.get('ds3_without_ds2_polymorphs', {}).get('excluded', [])) or 'none'}):",
        markdown_table(display_table(ds3_np), index=False),
        "### Errors by anion class and by gap range (MAE, eV)",
        markdown_table(pd.read_csv(tables / "ds3_errors_by_class.csv", index_col=0)),
        markdown_table(pd.read_csv(tables / "ds3_errors_by_gap.csv", index_col=0)),
        *_trust_section(
            run,
            read_json(paths["trust"]) or {},
            metrics.get("ensemble_ds3_trust"),
            profile.etl.ds2.below_pbe_threshold,
        ),
        "## What the numbers show",
        *([warning] if warning else []),
        findings(cv_table, ds3, best, int(metrics.get("n_ds3", len(ds3)))),
        ensemble_findings(cv_table, ds3, methods, metrics.get("ensemble_ds3_coverage", {})),
        "## Figures",
    ]
    parts += [f"![{title}]({rel})" for rel, title in _figures(run)]
    path = run / "report.md"
    atomic_write_text(path, "\n\n".join(parts) + "\n")
    return path
