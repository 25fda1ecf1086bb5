"""The study, step by step: profiles, ETL, base model, domain adaptation, DS3 evaluation, t-SNE.

The notebooks are thin: each calls one or two functions of this package with explicit paths,
settings and seeds, then shows the returned tables and figures (``from cgcnn import study``;
every public name below is re-exported here).  One module per stage:

* :mod:`~cgcnn.study.profiles`: :class:`StudyProfile` and its settings, :func:`load_profile`.
* :mod:`~cgcnn.study.rundir`: run-folder paths, :func:`write_table`, :func:`work_bucket`.
* :mod:`~cgcnn.study.data`: the ETL stage (:func:`run_etl_stage`), :func:`load_data`.
* :mod:`~cgcnn.study.base`: M1 (:func:`train_base`).
* :mod:`~cgcnn.study.adaptation`: M2 variants and the control (:func:`run_adaptation`).
* :mod:`~cgcnn.study.evaluation`: DS3 scores (:func:`evaluate_ds3`) and display helpers.
* :mod:`~cgcnn.study.embeddings`: crystal features for t-SNE (:func:`embed_datasets`).

Every function writes its artefacts into a given *run folder*::

    <run>/config.json            resolved profile + inputs (written by scripts/run_pipeline.py)
    <run>/bucket/                the work bucket (raw/ copy + ETL outputs; work_bucket, run_etl_stage)
    <run>/data/etl.json          where DS1/DS2/DS3 tables, graphs and reports are (run_etl_stage)
    <run>/models/m1/             base model on DS1 (train_base)
    <run>/models/m2/<policy>/lr-<lr>/seed-<s>/   adapted models (run_adaptation)
    <run>/models/control/lr-<lr>/seed-<s>/       from-scratch control on DS2
    <run>/tables/*.csv           selection, per-seed and summary tables
    <run>/figures/*.png          figures
    <run>/metrics.json           DS3 metrics of every model and baseline (evaluate_ds3)

Protocol (Masood et al., Cell Rep. Phys. Sci. 2023, re-implemented):

* M1 is trained once on DS1 (PBE gaps), seed ``base.train.seed``.
* For every seed, DS2 (experimental gaps) is split into an adaptation training part and a
  validation part (``adapt.train.val_fraction``); that seed also seeds initialisation and
  shuffling.  DS3 is never used for any choice.
* For every freeze policy and for the from-scratch control, the learning rate is chosen
  from ``lr_grid`` by the mean validation MAE over ``selection_seeds`` seeds; the number of
  epochs is chosen by early stopping on the same validation split (best checkpoint).
* The adapted model "M2" is the policy with the lowest mean validation MAE over all seeds.
* DS3 is scored for raw PBE, linear-corrected PBE (fitted on each seed's adaptation training
  split), HSE06, G0W0, M1, every M2 variant and the control: mean ± std over seeds.
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
    Ds3Evaluation,
    adaptation_histories,
    display_table,
    evaluate_ds3,
    parity_columns,
)
from cgcnn.study.profiles import (
    PROFILE_NAMES,
    AdaptSettings,
    BaseSettings,
    StudyProfile,
    TsneSettings,
    load_profile,
    profile_path,
)
from cgcnn.study.rundir import (
    bucket_location,
    is_remote,
    run_paths,
    work_bucket,
    write_table,
)

__all__ = [
    "CONTROL",
    "ETL_FILES",
    "MODEL_LABELS",
    "PROFILE_NAMES",
    "AdaptSettings",
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
