#!/usr/bin/env python3
"""Write the study's notebooks (without outputs) from the cell texts below.

The notebooks are committed; this script is how they are kept thin and consistent:

    .venv/bin/python scripts/make_notebooks.py          # rewrite every notebook
    .venv/bin/python scripts/make_notebooks.py --check  # exit 1 if a committed notebook differs

Every notebook starts with a cell tagged ``parameters`` (papermill injects the pipeline's
values after it) and otherwise only calls into ``cgcnn``: no ``def`` / ``class``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]

RUN_PARAMETERS = '''\
run_dir = "../runs/interactive"  # this run's folder (the pipeline passes <output>/<run-id>)
config = "fixture"               # profile name, profile JSON file, or a run's config.json'''

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}

NOTEBOOKS["01-data-preparation/01-etl.ipynb"] = [
    ("md", """\
# ETL: raw inputs → DS1, DS2, DS3

Reads the bucket's `raw/` inputs (DS1 id list, two experimental band-gap tables, the DS3
validation table) and the Materials Project records (a snapshot file or the live API), applies
the wrangling rules of `cgcnn.etl`, builds the crystal graphs and writes everything back to the
**work bucket**: `processed/`, `json/`, `graphs/`, `reports/`.

* DS1: PBE gaps of the listed Materials Project structures (base model M1).
* DS2: experimental gaps for domain adaptation (DS3 materials removed).
* DS3: the validation set (experimental, HSE06 and G0W0 gaps); used only for the final table.

A local source bucket is never written: its `raw/` files are copied into `<run_dir>/bucket/` first."""),
    ("parameters", RUN_PARAMETERS + '''
bucket = "../tests/fixtures/bucket"  # raw inputs: a folder holding raw/, or s3://bucket[/prefix]
materials = "snapshot:../tests/fixtures/mp_snapshot/summary.jsonl.gz"  # or "mp" (needs MP_API_KEY)
workers = None  # graph-building processes (None: the profile's setting)'''),
    ("code", """\
from cgcnn import study

profile = study.load_profile(config)
bucket_used = study.work_bucket(run_dir, bucket)
print(f"profile {profile.name!r}: graphs within {profile.graph.radius:g} Å, "
      f"{profile.graph.max_neighbors} neighbours; work bucket {bucket_used}")"""),
    ("code", """\
etl = study.run_etl_stage(run_dir, bucket_used, materials, profile, workers=workers)
print(etl.summary())"""),
    ("md", "## Materials per dataset"),
    ("code", "study.etl_counts_table(etl)"),
    ("md", """\
## Drop report

Every raw row that did not make it into a dataset, by reason (see `cgcnn.etl.rules`): not in
the Materials Project source, no label, unparseable label, outside the gap window, duplicate,
overlap with DS3, or no crystal graph."""),
    ("code", "study.etl_drops_table(etl)"),
    ("code", "etl.drops.groupby(['dataset', 'reason']).head(3)  # examples of each reason"),
    ("md", "## DS2 source conflicts (sources disagreeing by more than the threshold)"),
    ("code", "etl.conflicts"),
    ("md", "## DS3 materials with a polymorph (same reduced formula) in DS2"),
    ("code", "etl.polymorphs[etl.polymorphs['dataset'] == 'ds2'] if len(etl.polymorphs) else etl.polymorphs"),
    ("md", "## DS3, the validation set"),
    ("code", "etl.ds3"),
]

NOTEBOOKS["01-data-preparation/02-eda.ipynb"] = [
    ("md", """\
# Exploratory analysis of DS1, DS2 and DS3

Distributions of the PBE and experimental band gaps per dataset, material classes by anion
(`cgcnn.classes`: oxides, chalcogenides, halides, pnictides, double anions, …), number of
elements and crystal systems."""),
    ("parameters", RUN_PARAMETERS),
    ("code", """\
%matplotlib inline
from pathlib import Path

import pandas as pd

from cgcnn import insights, study
from cgcnn.classes import ANION_CLASSES, CRYSTAL_SYSTEMS

profile = study.load_profile(config)
data = study.load_data(run_dir)
frames = data.frames()
figures, tables = Path(run_dir) / "figures", Path(run_dir) / "tables"
pd.Series({name: len(df) for name, df in frames.items()}, name="materials")"""),
    ("md", "## Band gaps"),
    ("code", """\
gap_stats = pd.concat({name: df[[c for c in ("bg_pbe", "bg_exp") if c in df]].describe().T
                       for name, df in frames.items()})
study.write_table(tables / "eda_gap_statistics.csv", gap_stats)
gap_stats.round(3)"""),
    ("code", """\
fig = insights.histogram_figure(frames, {"bg_pbe": "PBE gap (eV)", "bg_exp": "experimental gap (eV)"},
                                title="Band-gap distributions per dataset")
insights.save_figure(fig, figures / "eda_gaps.png")
fig"""),
    ("code", """\
fig = insights.parity_figure(pd.concat([frames["DS2"], frames["DS3"]], ignore_index=True),
                             "bg_exp", {"PBE vs experiment, DS2 + DS3": "bg_pbe"}, ncols=1)
insights.save_figure(fig, figures / "eda_pbe_vs_experiment.png")
fig"""),
    ("md", "## Material classes by anion"),
    ("code", """\
anions = insights.count_table(frames, "anion_class", ANION_CLASSES)
study.write_table(tables / "eda_anion_classes.csv", anions)
anions"""),
    ("code", """\
double = {name: df[df["anion_class"] == "double anion"] for name, df in frames.items()}
insights.count_table(double, "anion_subclass")  # which anion pairs the double anions are"""),
    ("md", "## Number of elements and crystal systems"),
    ("code", """\
elements = insights.count_table(frames, "n_elements")
systems = insights.count_table(frames, "crystal_system", (*CRYSTAL_SYSTEMS, "unknown"))
study.write_table(tables / "eda_n_elements.csv", elements)
study.write_table(tables / "eda_crystal_systems.csv", systems)
pd.concat({"number of elements": elements, "crystal system": systems})"""),
    ("code", """\
fig = insights.bar_figure(frames, {"anion_class": "class by anion", "n_elements": "number of elements",
                                   "crystal_system": "crystal system"}, title="Share of each dataset")
insights.save_figure(fig, figures / "eda_classes.png")
fig"""),
]

NOTEBOOKS["02-ml-dev/01-base-model.ipynb"] = [
    ("md", """\
# Base model M1 on DS1 (PBE gaps)

CGCNN trained on the Materials Project PBE gaps of DS1.  The split (train / validation / test)
is seeded; the target normaliser is fitted on the training split; the kept checkpoint is the
epoch with the lowest validation MAE.  The model lands in `<run_dir>/models/m1/`."""),
    ("parameters", RUN_PARAMETERS),
    ("code", """\
%matplotlib inline
from pathlib import Path

from cgcnn import insights, study

profile = study.load_profile(config)
print(f"profile {profile.name!r}, device {profile.device!r}")
print("model:", profile.model)
print("training:", profile.base.train)
print("DS1 subset:", profile.base.max_crystals or "all")"""),
    ("code", """\
base = study.train_base(run_dir, profile)
print(f"M1: {base.n_crystals} DS1 crystals, {len(base.history)} epochs in {base.seconds:.0f} s, "
      f"best epoch {base.best_epoch}; checkpoint {base.checkpoint}")"""),
    ("md", "## M1 on the DS1 splits (PBE gaps, eV)"),
    ("code", "base.metrics.round(4)"),
    ("code", """\
fig = insights.history_figure({"M1": base.history}, title="M1 on DS1")
insights.save_figure(fig, Path(run_dir) / "figures" / "m1_history.png")
fig"""),
]

NOTEBOOKS["02-ml-dev/02-domain-adaptation.ipynb"] = [
    ("md", """\
# Domain adaptation on DS2, chosen by grouped cross-validation, and the DS3 evaluation

M1 is fine-tuned on the experimental gaps of DS2 with each freeze policy (`none`, `embedding`,
`convs`, `head`; see `cgcnn.freeze`), and a control of the same architecture is trained on DS2
from scratch.  **Every choice is made by K-fold cross-validation on DS2, folds grouped by
reduced formula** (polymorphs never straddle training and test): inside each fold an inner
validation split (also grouped) stops training early and picks each model's learning rate
and M2's policy, so no out-of-fold prediction comes from a model selected on its own test
fold.  The baselines — raw and linearly corrected PBE, boosted trees on Magpie composition
features with and without the PBE gap — are scored on the same folds.  The CV table and the
choices are written (`cv.json`) before DS3 is touched; DS3 is scored once, at the end, with
bootstrap 95 % intervals and paired differences."""),
    ("parameters", RUN_PARAMETERS),
    ("code", """\
%matplotlib inline
from pathlib import Path

import pandas as pd
from IPython.display import display

from cgcnn import insights, study

profile = study.load_profile(config)
figures = Path(run_dir) / "figures"
pd.Series({"freeze policies": ", ".join(profile.adapt.policies),
           "learning-rate grid": ", ".join(f"{lr:g}" for lr in profile.adapt.lr_grid),
           "control grid": ", ".join(f"{lr:g}" for lr in profile.adapt.control_grid),
           "CV": f"{profile.cv.folds} folds grouped by formula x {profile.cv.repeats} repeat(s), seed {profile.cv.seed}",
           "inner validation (formulas of a training fold)": profile.cv.inner_val_fraction,
           "final models: seeds": ", ".join(map(str, profile.seeds)),
           "max epochs / patience": f"{profile.adapt.train.epochs} / {profile.adapt.train.patience}"},
          name="setting").to_frame()"""),
    ("code", "adaptation = study.run_adaptation(run_dir, profile)"),
    ("md", "## Cross-validation on DS2 (out-of-fold, eV; paired: the materials every model predicts)"),
    ("code", "study.display_cv_table(adaptation.cv_table)"),
    ("md", "Recipes chosen by CV MAE (learning rate per model; M2 = the policy with the lowest CV MAE):"),
    ("code", """\
print(f"M2 = policy {adaptation.selected_policy!r}")
adaptation.choices.round(4)"""),
    ("code", "adaptation.runs.round(4)  # the final models: each recipe on all of DS2, one per seed"),
    ("code", """\
fig = insights.history_figure(study.adaptation_histories(adaptation), title="DS2, final models, first seed")
insights.save_figure(fig, figures / "adaptation_histories.png")
fig"""),
    ("md", """\
## Beyond fine-tuning: PBE-aware and multi-fidelity ensembles

Each candidate of `profile.methods` (see `cgcnn.study.methods`) is M1 extended with new inputs
— the PBE gap (a "Δ" head that learns the correction to PBE), composition features, or a
fidelity embedding trained on PBE and experimental gaps together — fine-tuned as an ensemble
of `members` seeds on the same outer folds.  The candidate with the lowest CV MAE is
selected, the spread of its members is calibrated on its out-of-fold predictions, and it is
trained on all of DS2; the CV table below now includes every candidate."""),
    ("code", """\
methods = study.run_methods(run_dir, profile)
if methods:
    display(study.display_cv_table(study.load_cv_table(run_dir)))
    display(pd.read_csv(Path(run_dir) / "tables" / "methods_calibration.csv", index_col=0).round(3))
    print(f"selected: {methods['selected']}; spread calibration factor {methods['calibration']['scale']:.2f}")
else:
    print("no method candidates in this profile")"""),
    ("md", "## DS3: experimental gaps of the validation set (touched once, here)"),
    ("code", """\
evaluation = study.evaluate_ds3(run_dir, profile, adaptation)
print("best baseline by CV:", evaluation.best_baseline)
study.display_table(evaluation.summary)"""),
    ("md", "The same table without the DS3 materials that have a polymorph (same reduced formula) in DS2:"),
    ("code", """\
print("left out:", ", ".join(evaluation.excluded) or "none")
study.display_table(evaluation.summary_no_polymorphs)"""),
    ("md", "MAE (eV) by anion class and by experimental-gap range:"),
    ("code", "evaluation.by_class.round(3)"),
    ("code", "evaluation.by_gap.round(3)"),
    ("code", """\
fig = insights.parity_figure(evaluation.predictions, "bg_exp", study.parity_columns(evaluation),
                             metrics=evaluation.summary.set_index("label"),
                             title="DS3: predicted vs experimental gap (models with seeds: mean prediction)")
insights.save_figure(fig, figures / "ds3_parity.png")
fig"""),
    ("code", "evaluation.predictions.round(3)"),
]

NOTEBOOKS["03-insights/01-tsne.ipynb"] = [
    ("md", """\
# What the models learnt: t-SNE of crystal features

For each model, every crystal is represented by its pooled features after the **last
convolution layer** and by the **post-FC vector** that feeds the output layer.  t-SNE
(openTSNE) is *fitted on DS2*; DS3 is *projected* into that fixed map.  Colours: experimental
gap, class by anion, crystal system; DS3 points are diamonds labelled by formula."""),
    ("parameters", RUN_PARAMETERS),
    ("code", """\
%matplotlib inline
from pathlib import Path

from IPython.display import display

from cgcnn import insights, study

profile = study.load_profile(config)
settings = profile.tsne
figures, tables = Path(run_dir) / "figures", Path(run_dir) / "tables"
settings"""),
    ("code", """\
layers = {"conv": "last convolution layer", "hidden": "post-FC vector"}
for model in settings.models:
    embeddings = study.embed_datasets(run_dir, profile, model)
    for layer, layer_name in layers.items():
        features = embeddings.layer(layer)
        tsne = insights.fit_tsne(features["ds2"], features["ds3"], perplexity=settings.perplexity,
                                 n_iter=settings.n_iter, early_exaggeration_iter=settings.early_exaggeration_iter,
                                 standardize=settings.standardize, seed=settings.seed)
        study.write_table(tables / f"tsne_{model}_{layer}.csv", study.tsne_table(embeddings, tsne), index=False)
        fig = insights.tsne_figure(tsne, embeddings.frames["ds2"], embeddings.frames["ds3"],
                                   title=f"{study.MODEL_LABELS[model]}: {layer_name} "
                                         f"(t-SNE fitted on DS2, perplexity {tsne.perplexity:.1f}; DS3 projected)")
        insights.save_figure(fig, figures / f"tsne_{model}_{layer}.png")
        display(fig)"""),
]


NOTEBOOKS["03-insights/02-report.ipynb"] = [
    ("md", """\
# Report of the run

Writes `report.md` into the run folder from the run's own tables and JSON files: data counts
and sources, the protocol, the cross-validation table on DS2, the DS3 table with bootstrap
intervals and paired differences, errors by anion class and gap range, the figures, and a
plain paragraph of what the numbers do and do not show (generated from the intervals)."""),
    ("parameters", RUN_PARAMETERS),
    ("code", """\
from IPython.display import Markdown

from cgcnn import study

profile = study.load_profile(config)
path = study.write_report(run_dir, profile)
print(path)"""),
    ("code", "Markdown(path.read_text())"),
]


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for k, (kind, text) in enumerate(cells):
        if kind == "md":
            cell = nbformat.v4.new_markdown_cell(text)
        else:
            cell = nbformat.v4.new_code_cell(text)
            if kind == "parameters":
                cell.metadata["tags"] = ["parameters"]
        cell["id"] = f"cell-{k:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare with the committed notebooks")
    args = ap.parse_args(argv)
    stale = []
    for rel, cells in NOTEBOOKS.items():
        path = REPO / rel
        text = nbformat.writes(build(cells)) + "\n"
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(rel)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {rel}")
    if stale:
        print("out of date (run scripts/make_notebooks.py):", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
