"""The study, step by step: profiles, ETL, base model, domain adaptation, DS3 evaluation, t-SNE.

The notebooks are thin: each calls one or two functions of this package with explicit paths,
settings and seeds, then shows the returned tables and figures (``from cgcnn import study``;
every public name below is re-exported here).  One module per stage:

* :mod:`~cgcnn.study.profiles`: :class:`StudyProfile` and its settings, :func:`load_profile`.
* :mod:`~cgcnn.study.rundir`: run-folder paths, :func:`write_table`, :func:`work_bucket`.
* :mod:`~cgcnn.study.data`: the ETL stage (:func:`run_etl_stage`), :func:`load_data`.
* :mod:`~cgcnn.study.base`: M1 (:func:`train_base`).
* :mod:`~cgcnn.study.adaptation`: nested grouped CV of M2 variants and the control, final models (:func:`run_adaptation`).
* :mod:`~cgcnn.study.crossval`: baselines on the folds, within-fold choices, the CV table.
* :mod:`~cgcnn.study.candidates`: the methods stage's candidates (PBE-aware, composition,
  multi-fidelity CGCNN ensembles; their averages with boosted trees), fitted within a fold.
* :mod:`~cgcnn.study.methods`: those candidates cross-validated on the same folds, the
  selected one calibrated and trained on all of DS2 (:func:`run_methods`).
* :mod:`~cgcnn.study.evaluation`: DS3 scores (:func:`evaluate_ds3`) and display helpers.
* :mod:`~cgcnn.study.embeddings`: crystal features for t-SNE (:func:`embed_datasets`).
* :mod:`~cgcnn.study.report`: ``report.md`` of a run, from its own numbers (:func:`write_report`).

Every function writes its artefacts into a given *run folder*::

    <run>/config.json            resolved profile + inputs (written by scripts/run_pipeline.py)
    <run>/bucket/                the work bucket (raw/ copy + ETL outputs; work_bucket, run_etl_stage)
    <run>/data/etl.json          where DS1/DS2/DS3 tables, graphs and reports are (run_etl_stage)
    <run>/models/m1/             base model on DS1 (train_base)
    <run>/cv.json                the CV protocol, table and chosen recipes (run_adaptation)
    <run>/models/m2/<policy>/seed-<s>/   final adapted models (run_adaptation)
    <run>/models/control/seed-<s>/       final from-scratch control on DS2
    <run>/methods.json           candidates' CV MAE, the selected method, its calibration (run_methods)
    <run>/models/ensemble/member-<k>/    the selected ensemble trained on all of DS2
    <run>/tables/*.csv           selection, per-seed and summary tables
    <run>/figures/*.png          figures
    <run>/metrics.json           DS3 metrics of every model and baseline (evaluate_ds3)

Protocol (Masood et al., Cell Rep. Phys. Sci. 2023, re-implemented; choices by cross-validation):

* M1 is trained once on DS1 (PBE gaps), seed ``base.train.seed`` (or the packaged M1 is used).
* DS2 (experimental gaps) is split into ``cv.folds`` folds grouped by reduced formula,
  repeated ``cv.repeats`` times; inside each fold an inner grouped validation split stops
  training early and picks learning rates and M2's policy (nested: no out-of-fold prediction
  comes from a model selected on its own test fold).  Baselines are scored on the same folds.
* The CV table and the recipes it chose go to ``<run>/cv.json`` before DS3 is touched; the
  final models are the chosen recipes trained on all of DS2, one per seed.
* DS3 is scored once, at the end (:func:`evaluate_ds3` refuses to run without ``cv.json``),
  with bootstrap intervals and paired differences.
"""

from cgcnn.fileio import write_json
from cgcnn.study.adaptation import (
    CONTROL,
    AdaptationResult,
    load_adaptation,
    model_key,
    run_adaptation,
)
from cgcnn.study.base import BaseResult, base_checkpoint, train_base
from cgcnn.study.crossval import BASELINES, cv_summary, display_cv_table, load_cv_table
from cgcnn.study.data import (
    ETL_FILES,
    StudyData,
    etl_counts_table,
    etl_drops_table,
    load_data,
    run_etl_stage,
)
from cgcnn.study.embeddings import (
    Embeddings,
    embed_datasets,
    model_checkpoint,
    tsne_table,
)
from cgcnn.study.evaluation import (
    MODEL_LABELS,
    CvMissingError,
    Ds3Evaluation,
    adaptation_histories,
    display_table,
    evaluate_ds3,
    parity_columns,
    require_cv,
)
from cgcnn.study.methods import METHOD_LABELS, load_methods, run_methods
from cgcnn.study.profiles import (
    PROFILE_NAMES,
    AdaptSettings,
    BaseSettings,
    CVSettings,
    MethodSettings,
    StudyProfile,
    TsneSettings,
    load_profile,
    profile_path,
)
from cgcnn.study.report import findings, markdown_table, write_report
from cgcnn.study.rundir import (
    bucket_location,
    is_remote,
    run_paths,
    work_bucket,
    write_table,
)

__all__ = [
    "METHOD_LABELS",
    "load_cv_table",
    "load_methods",
    "run_methods",
    "findings",
    "markdown_table",
    "write_report",
    "BASELINES",
    "CVSettings",
    "CvMissingError",
    "cv_summary",
    "display_cv_table",
    "require_cv",
    "CONTROL",
    "ETL_FILES",
    "MODEL_LABELS",
    "PROFILE_NAMES",
    "AdaptSettings",
    "MethodSettings",
    "AdaptationResult",
    "BaseResult",
    "BaseSettings",
    "Ds3Evaluation",
    "Embeddings",
    "StudyData",
    "StudyProfile",
    "TsneSettings",
    "adaptation_histories",
    "base_checkpoint",
    "bucket_location",
    "display_table",
    "embed_datasets",
    "etl_counts_table",
    "etl_drops_table",
    "evaluate_ds3",
    "is_remote",
    "load_adaptation",
    "load_data",
    "load_profile",
    "model_checkpoint",
    "model_key",
    "parity_columns",
    "profile_path",
    "run_adaptation",
    "run_etl_stage",
    "run_paths",
    "train_base",
    "tsne_table",
    "work_bucket",
    "write_json",
    "write_table",
]
