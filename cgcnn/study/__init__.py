"""The study, one module per notebook step; each imports only the steps before it.

=========================  ==========================================  ===================================
notebook                   module                                      writes into the run folder
=========================  ==========================================  ===================================
01-data-preparation/01     :mod:`~cgcnn.study.data_preparation` (ETL stage)    ``bucket/``, ``data/etl.json``
01-data-preparation/02     (EDA: :mod:`cgcnn.insights.figures`)        ``tables/eda_*``, ``figures/eda_*``
02-ml-dev/01               :mod:`~cgcnn.study.base_model`              ``models/m1/``
02-ml-dev/02               :mod:`~cgcnn.study.cross_validation`        the CV record, ``tables/cv_*``
02-ml-dev/03               :mod:`~cgcnn.study.methods`                 the methods record, ``tables/methods_*``
02-ml-dev/04               :mod:`~cgcnn.study.trust`                   the trust record, ``tables/trust_*``, ``models/trust/``
02-ml-dev/05               :mod:`~cgcnn.study.final_models`,           ``models/m2/``, ``models/control/``,
                           :mod:`~cgcnn.study.ds3`                     ``models/ensemble/``, the DS3 record
03-insights/01             :mod:`~cgcnn.study.tsne_maps`               ``tables/tsne_*``, ``figures/tsne_*``
03-insights/02             :mod:`~cgcnn.study.report`                  ``report.md``
=========================  ==========================================  ===================================

The engine under every step: :mod:`~cgcnn.study.recipes` (every model the study compares, as a
recipe with a name, a label and fit/predict; the registry), :mod:`~cgcnn.study.engine` (the one
fold loop: ``cross_validate`` on any protocol's folds, ``fit_final``) and
:mod:`~cgcnn.study.fits` (the one fit cache: every fit stored once, resumed after a crash).
Shared by every step: :mod:`~cgcnn.study.profiles` (the validated settings),
:mod:`~cgcnn.study.datasets` (a run's DS1 / DS2 / DS3 read back),
:mod:`~cgcnn.study.rundir` (the typed run folder: every record, who writes it; the table writer),
:mod:`~cgcnn.study.display` (tables for reading) and :mod:`~cgcnn.study.candidates` (the methods
candidates' networks and their averages with trees).

Protocol (Masood et al., Cell Rep. Phys. Sci. 2023, re-implemented; choices by cross-validation):
M1 is trained once on DS1 (or the packaged M1 is used); DS2 is split into folds grouped by
reduced formula, and inside each fold an inner grouped validation split stops training
early and picks learning rates and M2's policy; the baselines are scored on the same folds;
the CV table and the chosen recipes go to the CV record before any final model is trained;
DS3 is scored once, at the end (:func:`cgcnn.study.ds3.evaluate_ds3` refuses to run without
the CV record), with bootstrap intervals and paired differences.
"""
