"""Write ``cgcnn/models/MODEL_CARD.md`` from the manifests of the shipped models.

Called by ``scripts/ship_model.py`` after every shipment (and runnable on its own:
``python scripts/model_card.py``); every number in the card comes from a manifest.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

INTENDED_USE = """\
## Intended use

* **Ordered, non-metallic crystals with band gaps of about 0–5 eV** (the range of the
  training data).  The models **are not metal detectors**: every gap they return is at
  least 0 eV (a negative output of the network is clipped to 0, which never increases an
  error), but a metal usually gets a gap well above 0, so screen out metals first (e.g. with
  the Materials Project's `is_metal`, or a PBE gap of zero).
* Input: a crystal structure (CIF, pymatgen `Structure`, a Materials Project snapshot).  The
  ensemble also reads the material's PBE gap when you give it (`--pbe-gaps`, or `pbe=` in
  Python); otherwise the base model's prediction is used, and the output says which
  (`pbe_gap_source`: `given` / `predicted`).  A known PBE gap gives better predictions.
* Output: `prediction_ev` (the members' mean), `prediction_std_ev` (their spread times
  the calibration factor, fitted on out-of-fold predictions: about 68 % of materials should
  lie within ±1 std if the errors were normal; they are heavier-tailed), and for the
  ensemble `prediction_lo_ev`–`prediction_hi_ev` (a calibrated central interval, 90 % by
  default) with `in_domain` / `domain_note` (whether the crystal is like the training
  data, and if not why) — see the coverage tables below.  Trust `in_domain = false`
  predictions less: their errors are larger and their intervals wider.
* Not for: disordered or partially occupied structures, molecules, surfaces, defects,
  temperature-dependent gaps, or elements missing from the atom-feature table (refused by name).
"""


def _table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _ensemble_section(name: str, m: dict) -> list[str]:
    cv = m["cv"]
    cal = m["calibration"]
    rows = [{"model": k, **v} for k, v in cv["metrics"].items()]
    rows.sort(key=lambda r: r["mae"])
    out = [
        f"## `{name}` — {m['description']}",
        f"Method `{m['method']}`, {m['members']} members"
        + (
            f" ({m['cgcnn_members'] or 'a CHGNet head'} {'CGCNNs ' if m['cgcnn_members'] else ''}and boosted trees on Magpie composition + PBE"
            + (
                ", learning the correction experiment − PBE (their gap: PBE + their output)"
                if m["trees"].get("target") == "correction"
                else ", learning the gap"
            )
            + f", stored with skops, weight {m['trees']['weight']:g})"
            if m.get("trees")
            else ""
        )
        + f"; PBE gaps not given are predicted by `{m['pbe_model']}` (the M1 the members started from). "
        f"Trained on {m['data']['n_train']} experimental gaps (DS2)"
        + (f" in {m['wall_time_s']:.0f} s; " if m.get("wall_time_s") is not None else "; ")
        + (f"backbone: CHGNet (`{m['backbone']}/`, cgcnn.prediction.backbone); " if m.get("backbone") else "")
        + f"code {m['trained_with'].get('git_sha')}, profile `{m['trained_with'].get('profile')}`. "
        f"No training id is a DS3 id ({m['data']['excluded_ids_checked']} excluded ids checked).",
        f"### Cross-validated accuracy on DS2 ({cv['protocol']['folds']} folds grouped by {cv['protocol']['grouped_by']}, "
        f"{cv['protocol']['repeats']} repeat(s); eV)",
        "Paired on the materials every model predicts; Δ: MAE difference to the best baseline with its bootstrap 95 % interval.",
        _table(
            rows,
            [
                "model",
                "mae",
                "mae_lo",
                "mae_hi",
                "rmse",
                "r2",
                "n",
                "diff_vs_best_baseline",
                "diff_vs_best_baseline_lo",
                "diff_vs_best_baseline_hi",
            ],
        ),
        "CV MAE of every candidate method (all DS2 materials): "
        + ", ".join(f"`{k}` {v:.3f}" for k, v in cv["candidates_mae"].items())
        + " eV."
        + "".join(
            f" On the rows labelled by `{src}` alone: " + ", ".join(f"`{k}` {v:.3f}" for k, v in maes.items()) + " eV."
            for src, maes in (cv.get("candidates_mae_by_label_source") or {}).items()
        ),
        "### Uncertainty",
        f"Spread calibration factor {cal['scale']:.2f}. Out of fold, {cal['within_1sd']:.0%} of the materials lie within "
        f"±1 std and {cal['within_2sd']:.0%} within ±2 std (before scaling: {cal['within_1sd_raw']:.0%} and "
        f"{cal['within_2sd_raw']:.0%}; normal errors would give 68 % and 95 %).",
        *_trust_section(m.get("trust")),
        "### Errors by anion class and gap range (out-of-fold MAE, eV)",
        _table([{"anion class": k, **v} for k, v in cv["errors_by_anion_class"].items()], ["anion class", "n", "mae"]),
        _table(
            [{"experimental gap (eV)": k, **v} for k, v in cv["errors_by_gap_range"].items()],
            ["experimental gap (eV)", "n", "mae"],
        ),
        "### Known failure modes seen in CV (largest out-of-fold errors)",
        _table(cv["worst_materials"], ["material_id", "formula", "anion_class", "bg_exp", "prediction", "abs_error"]),
    ]
    return out


PROTOCOLS = {
    "grouped": "grouped folds (by formula)",
    "chemistry_shift": "chemistry-shift folds (composition clusters held out)",
    "class_held_out": "class-held-out folds (whole anion classes held out)",
}


def _trust_section(t: dict | None) -> list[str]:
    """Intervals, applicability domain and suspicious labels, from the manifest's ``trust``."""
    if not t:
        return []
    from cgcnn.prediction.intervals import NORMALISER_NOTES
    from cgcnn.study.report import listed

    r = t["domain_rules"]
    level = f"{t['level']:.0%}"
    rows = [
        {**c, "protocol": PROTOCOLS.get(c["protocol"], c["protocol"])}
        for c in t["coverage"]
        if c["pbe_input"] == "given" or c["subset"] == "all"
    ]
    out = [
        f"### Intervals ({level} by default, `--interval-level`)",
        "`prediction_lo_ev`–`prediction_hi_ev` is a split-conformal interval ("
        + "scores: "
        + NORMALISER_NOTES.get(t["normaliser"], f"normalised by {t['normaliser']}")
        + "), calibrated on out-of-fold predictions of the same recipe under the "
        + listed([PROTOCOLS.get(p, p) for p in t.get("calibrated_on", ["grouped", "chemistry_shift"])])
        + ", "
        "per domain category (in domain / out of domain / PBE gap predicted; calibration scores: "
        + ", ".join(f"{k} {v}" for k, v in t["n_calibration"].items())
        + "). Coverage below is **cross-fitted**: each fold is scored by a calibration that never saw its "
        "materials. `pbe_input` `given`: MP's PBE gap given; `predicted`: M1's prediction of it, as for a "
        "user who gives none. Mean width in eV.",
        _table(rows, ["protocol", "pbe_input", "subset", "n", "coverage", "mean_width_ev", "mae"]),
    ]
    if t.get("held_out_classes"):
        out.append(
            "In the class-held-out folds each fold holds out whole anion classes ("
            + "; ".join(" + ".join(c) for c in t["held_out_classes"])
            + "), so its test materials' class is absent from training, as for a user's material of a class the "
            "model never saw."
        )
    if t.get("coverage_by_class"):
        cells = t.get("min_class_scores", 0)
        out += [
            (
                f"Within a category, an anion class with at least {cells} calibration scores has its own quantile "
                "(cross-validation on DS2 brought the classes' coverage closer to the level this way)."
                if cells
                else "The quantile is the category's for every material class (per-class quantiles were switched off)."
                if t.get("min_class_scores_setting") == 0
                else "The quantile is the category's for every material class (keeping one per anion class did not "
                "bring the classes' coverage closer to the level in cross-validation)."
            )
            + " Cross-fitted coverage per anion class, MP's PBE gap given:",
            _table(
                [{**c, "protocol": PROTOCOLS.get(c["protocol"], c["protocol"])} for c in t["coverage_by_class"]],
                ["protocol", "anion_class", "n", "coverage", "mean_width_ev", "mae"],
            ),
        ]
    if t.get("ds3"):
        d = t["ds3"]
        out.append(
            f"On DS3 (held out, scored once): coverage {d['all']['coverage']:.1%} of {d['all']['n']} materials "
            f"({round(d['all']['coverage'] * d['all']['n'])} inside), "
            f"mean width {d['all']['mean_width_ev']:.2f} eV."
        )
    out += [
        "### Applicability domain (`in_domain`, `domain_note`)",
        f"`in_domain` is false, and `domain_note` says why, when a crystal holds an element seen in fewer than "
        f"{r['min_element_count']} of the training materials; when its nearest training crystal in the base model's "
        f"feature space (last convolution layer, standardised) is farther than {r['distance_threshold']:.2f} (the "
        f"{r['distance_percentile']:g}th percentile of DS2's out-of-fold distances); when its PBE gap had to be "
        f"predicted; "
        + (
            f"when the given PBE gap is above {r['max_pbe_ev']:g} eV (the largest training PBE gap); "
            if r.get("max_pbe_ev") is not None
            else ""
        )
        + f"or when the predicted gap is below {r['near_zero_ev']:g} eV (perhaps a metal) or above "
        f"{r['max_gap_ev']:g} eV (the largest training gap). Out-of-fold MAE (eV) in vs out of domain, with the "
        "bootstrap 95 % interval of the difference:",
        _table(
            [{"protocol": PROTOCOLS.get(x["protocol"], x["protocol"]), **x} for x in t["separation"]],
            ["protocol", "n_in", "mae_in", "n_out", "mae_out", "diff_out_minus_in", "diff_lo", "diff_hi"],
        ),
    ]
    if t.get("ds3") and t["ds3"].get("diff_out_minus_in") is not None:
        d = t["ds3"]
        out.append(
            f"On DS3: MAE {d['in_domain']['mae']:.3f} eV in domain ({d['in_domain']['n']}), "
            f"{d['out_of_domain']['mae']:.3f} eV out of domain ({d['out_of_domain']['n']}); difference "
            f"{d['diff_out_minus_in']:+.3f} [{d['diff_lo']:+.3f}, {d['diff_hi']:+.3f}] eV."
        )
    s = t.get("suspicious_labels")
    if s:
        out.append("### Suspicious training labels")
        out.append(
            f"{s['n']} DS2 labels look wrong by at least one test ("
            + ", ".join(f"{k}: {v}" for k, v in s["by_reason"].items())
            + "); they are listed in the study's `tables/suspicious_labels.csv` and `report.md`, and were kept in training."
        )
    return out


def _base_section(name: str, m: dict) -> list[str]:
    rows = [{"split": k, **v} for k, v in m.get("metrics", {}).items()]
    return [
        f"## `{name}` — base model",
        m.get("description", ""),
        "Predicts **PBE-like** gaps (it was trained on DS1's PBE gaps, which underestimate experiment). "
        f"Best epoch {m.get('best_epoch')} of {m.get('epochs_run')}; code {m.get('trained_with', {}).get('git_sha')}.",
        _table(rows, ["split", "mae", "rmse", "r2", "n"]),
    ]


def write_model_card(models_dir: Path) -> Path:
    from cgcnn.fileio import atomic_write_text

    manifests = {p.parent.name: json.loads(p.read_text()) for p in sorted(models_dir.glob("*/manifest.json"))}
    parts = [
        "# Model card: shipped band-gap models",
        "Written by `scripts/model_card.py` from the manifests in this folder; every number comes from them. "
        "`cgcnn predict` uses `ensemble` by default and `base` with `--model base`.",
        INTENDED_USE,
    ]
    for name, m in manifests.items():
        parts += _ensemble_section(name, m) if m.get("kind") == "ensemble" else _base_section(name, m)
    path = models_dir / "MODEL_CARD.md"
    atomic_write_text(path, "\n\n".join(parts) + "\n")
    return path


if __name__ == "__main__":
    print(write_model_card(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "cgcnn" / "models"))
