"""The study, step by step: profiles, ETL, base model, domain adaptation, DS3 evaluation.

The notebooks are thin: each calls one or two functions of this module with explicit paths,
settings and seeds, then shows the returned tables and figures.  Every function writes its
artefacts into a given *run folder*::

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

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from cgcnn.config import (
    FreezePolicy,
    GraphConfig,
    ModelConfig,
    NormalizerPolicy,
    StrictModel,
    TrainConfig,
)
from cgcnn.etl.config import EtlConfig
from cgcnn.fileio import atomic_write_bytes, json_safe

PROFILE_NAMES = ("fixture", "default", "paper")


# --------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------
class BaseSettings(StrictModel):
    """Base model M1 on DS1."""

    train: TrainConfig
    max_crystals: int | None = Field(
        None, ge=10, description="train on a random subset of DS1 of this size (seeded); None = all of DS1"
    )


class AdaptSettings(StrictModel):
    """Domain adaptation on DS2 and the from-scratch control."""

    policies: list[FreezePolicy] = Field(default_factory=lambda: ["none", "embedding", "convs", "head"], min_length=1)
    normalizer: NormalizerPolicy = "refit"
    train: TrainConfig = Field(description="epochs = upper bound; patience = early stopping on DS2 validation")
    lr_grid: list[float] = Field(min_length=1)
    control_train: TrainConfig | None = Field(None, description="control settings; default: same as train")
    control_lr_grid: list[float] | None = Field(None, description="default: lr_grid")
    selection_seeds: int | None = Field(
        1, ge=1, description="learning rates are compared on the first N seeds (None = all seeds)"
    )

    @model_validator(mode="after")
    def _check(self) -> "AdaptSettings":
        if len(set(self.policies)) != len(self.policies):
            raise ValueError(f"freeze policies must be unique, got {self.policies}")
        for grid in (self.lr_grid, self.control_lr_grid or []):
            if any(lr <= 0 for lr in grid):
                raise ValueError(f"learning rates must be positive, got {grid}")
        if self.train.val_fraction <= 0:
            raise ValueError("adaptation needs a DS2 validation split (adapt.train.val_fraction > 0)")
        return self

    @property
    def control(self) -> TrainConfig:
        return self.control_train or self.train

    @property
    def control_grid(self) -> list[float]:
        return list(self.control_lr_grid or self.lr_grid)


class TsneSettings(StrictModel):
    """openTSNE settings.  ``perplexity=None`` -> ``min(30, (n - 1) / 3)`` for n fitted points."""

    perplexity: float | None = Field(None, gt=0)
    n_iter: int = Field(500, ge=10)
    early_exaggeration_iter: int = Field(250, ge=0)
    standardize: bool = True
    seed: int = 0
    models: list[Literal["m1", "m2", "control"]] = Field(default_factory=lambda: ["m1", "m2"], min_length=1)


class StudyProfile(StrictModel):
    """Everything the pipeline needs besides the data location.

    ``graph`` is the single source of the graph settings: it is copied into ``etl.graph``
    (an ``etl`` section naming different graph settings is rejected).
    """

    name: str
    description: str = ""
    graph: GraphConfig
    model: ModelConfig
    etl: EtlConfig = Field(default_factory=EtlConfig)
    base: BaseSettings
    adapt: AdaptSettings
    seeds: list[int] = Field(min_length=1)
    tsne: TsneSettings = Field(default_factory=TsneSettings)
    workers: int | None = Field(None, ge=1, description="graph-building processes; None = all cores")
    torch_threads: int | None = Field(
        None, ge=1, description="torch.set_num_threads for training and inference; None = torch's default"
    )
    device: str = "auto"

    @model_validator(mode="before")
    @classmethod
    def _graph_into_etl(cls, data):
        if isinstance(data, dict) and "graph" in data:
            graph = GraphConfig.model_validate(data["graph"]) if not isinstance(data["graph"], GraphConfig) else data["graph"]
            etl = data.get("etl") or {}
            etl = etl.to_dict() if isinstance(etl, EtlConfig) else dict(etl)
            if "graph" in etl and GraphConfig.model_validate(etl["graph"]) != graph:
                raise ValueError("etl.graph differs from graph; give the graph settings once, under 'graph'")
            etl["graph"] = graph.model_dump(mode="json")
            data = {**data, "etl": etl}
            model = data.get("model")
            if isinstance(model, dict) and "nbr_fea_len" not in model:
                data["model"] = {**model, "nbr_fea_len": graph.n_gaussians}
        return data

    @model_validator(mode="after")
    def _check(self) -> "StudyProfile":
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be unique, got {self.seeds}")
        return self

    def with_overrides(self, *, seeds: list[int] | None = None, device: str | None = None) -> "StudyProfile":
        """A copy with other seeds and/or device (validated again)."""
        data = self.to_dict()
        if seeds is not None:
            data["seeds"] = list(seeds)
        if device is not None:
            data["device"] = device
        return StudyProfile.model_validate(data)

    def train_config(self, cfg: TrainConfig, **update) -> TrainConfig:
        """``cfg`` with this profile's device (and any other updates) applied."""
        return TrainConfig.model_validate({**cfg.to_dict(), "device": self.device, **update})

    def apply_threads(self) -> None:
        """Apply ``torch_threads`` (tiny models run faster on one thread than on several)."""
        if self.torch_threads is not None:
            import torch

            torch.set_num_threads(self.torch_threads)


def profile_path(name: str) -> Path:
    """Path of a bundled profile (``fixture``, ``default``, ``paper``)."""
    if name not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {name!r}; bundled profiles: {', '.join(PROFILE_NAMES)} (or give a JSON path)")
    return Path(str(resources.files("cgcnn") / "profiles" / f"{name}.json"))


def load_profile(name_or_path: str | os.PathLike, *, seeds: list[int] | None = None, device: str | None = None) -> StudyProfile:
    """Load a bundled profile by name, a profile JSON file, or a run's ``config.json``.

    A run's ``config.json`` (written by ``scripts/run_pipeline.py``) holds the resolved
    profile under ``"settings"``.
    """
    text = str(name_or_path)
    path = profile_path(text) if text in PROFILE_NAMES else Path(text)
    if not path.is_file():
        raise FileNotFoundError(f"profile {text!r}: no such file (bundled profiles: {', '.join(PROFILE_NAMES)})")
    data = json.loads(path.read_text())
    if "settings" in data and "name" not in data:
        data = data["settings"]
    profile = StudyProfile.model_validate(data)
    if seeds is not None or device is not None:
        profile = profile.with_overrides(seeds=seeds, device=device)
    return profile


# --------------------------------------------------------------------------------------
# Run folder helpers
# --------------------------------------------------------------------------------------
def write_json(path: str | os.PathLike, obj) -> Path:
    """Write JSON atomically; NaN/inf become ``null``."""
    return atomic_write_bytes(Path(path), (json.dumps(json_safe(obj), indent=2) + "\n").encode())


def write_table(path: str | os.PathLike, df: "pd.DataFrame", *, index: bool = True) -> Path:
    """Write a CSV table atomically."""
    return atomic_write_bytes(Path(path), df.to_csv(index=index).encode())


def run_paths(run_dir: str | os.PathLike) -> dict[str, Path]:
    """The standard sub-folders of a run folder (created on demand by the writers)."""
    run = Path(run_dir)
    return {"run": run, "data": run / "data", "models": run / "models", "tables": run / "tables",
            "figures": run / "figures", "metrics": run / "metrics.json"}


# --------------------------------------------------------------------------------------
# Stage 1: ETL
# --------------------------------------------------------------------------------------
# Outputs of the ETL that later stages read (bucket keys, see cgcnn.etl.run).
ETL_FILES = {
    "ds1_csv": "processed/ds1.csv",
    "ds2_csv": "processed/ds2.csv",
    "ds3_csv": "processed/ds3.csv",
    "ds1_graphs": "graphs/ds1.npz",
    "ds2_graphs": "graphs/ds2.npz",
    "ds3_graphs": "graphs/ds3.npz",
    "report": "reports/etl_report.json",
    "drops": "reports/drops.csv",
    "polymorphs": "reports/polymorphs.csv",
    "conflicts": "reports/conflicts.csv",
}


def work_bucket(run_dir: str | os.PathLike, bucket: str) -> str:
    """The bucket the ETL may write to.

    A local folder outside the run folder is never written: its ``raw/`` inputs are copied
    into ``<run>/bucket/raw/`` (files with identical bytes are not copied again) and that
    copy is returned.  An ``s3://`` bucket, or a folder already inside the run, is returned
    as it is (the ETL writes ``processed/``, ``graphs/``, ``reports/`` beside ``raw/``, as in
    the original workflow).
    """
    text = str(bucket)
    if "://" in text and not text.startswith("file://"):
        return text
    source = Path(text.removeprefix("file://")).expanduser().resolve()
    run = Path(run_dir).expanduser().resolve()
    if source == run or run in source.parents:
        return str(source)
    from cgcnn.etl import prepare_work_bucket

    target = run / "bucket"
    prepare_work_bucket(source, target)
    return str(target)


def run_etl_stage(run_dir: str | os.PathLike, bucket: str, materials: str, profile: StudyProfile, *,
                  workers: int | None = None, progress: bool = True):
    """Run the ETL on ``bucket`` and record where its outputs are in ``<run>/data/etl.json``.

    A local bucket's outputs are read in place; an S3 bucket's are downloaded into
    ``<run>/data/`` so later stages never need the network.

    Returns:
        the :class:`cgcnn.etl.EtlResult`.
    """
    from cgcnn.etl import open_bucket, run_etl

    run = Path(run_dir)
    paths = run_paths(run)
    n_workers = workers or profile.workers or os.cpu_count() or 1
    t0 = time.perf_counter()
    result = run_etl(bucket, materials, profile.etl, workers=n_workers, progress=progress)
    seconds = time.perf_counter() - t0
    store = open_bucket(bucket)
    root = store.local_root()
    files = {}
    for name, key in ETL_FILES.items():
        if root is not None:
            path = (Path(root) / key).resolve()
        else:
            path = atomic_write_bytes(paths["data"] / key.replace("/", "_"), store.read_bytes(key))
        files[name] = os.path.relpath(path, run.resolve()) if run.resolve() in path.parents else str(path)
    write_json(paths["data"] / "etl.json", {
        "bucket": result.bucket, "materials": materials, "counts": result.counts,
        "files": files, "graph_config": profile.graph.to_dict(), "seconds": round(seconds, 1),
    })
    write_table(paths["tables"] / "etl_counts.csv", etl_counts_table(result))
    write_table(paths["tables"] / "etl_drops.csv", etl_drops_table(result))
    return result


def etl_counts_table(result) -> pd.DataFrame:
    """Materials per dataset (DS1 PBE gaps, DS2 experimental gaps, DS3 validation)."""
    c = result.counts
    rows = [
        {"dataset": "DS1", "materials": c["ds1"], "label": "PBE gap (bg_pbe)"},
        {"dataset": "DS2", "materials": c["ds2"], "label": "experimental gap (bg_exp)"},
        {"dataset": "DS3", "materials": c["ds3"], "label": "experimental gap; HSE06, G0W0 where known"},
    ]
    return pd.DataFrame(rows).set_index("dataset")


def etl_drops_table(result) -> pd.DataFrame:
    """Dropped raw rows: reason × dataset (only reasons that occur), with totals."""
    by = result.counts["drops_by_dataset"]
    table = pd.DataFrame({ds.upper(): counts for ds, counts in by.items()}).fillna(0).astype(int)
    table = table[table.sum(axis=1) > 0]
    table["total"] = table.sum(axis=1)
    table.index.name = "reason"
    return table


# --------------------------------------------------------------------------------------
# Loading a run's data
# --------------------------------------------------------------------------------------
@dataclass
class StudyData:
    """DS1/DS2/DS3 tables (with anion class, crystal system, number of elements) and graphs."""

    run_dir: Path
    ds1: pd.DataFrame
    ds2: pd.DataFrame
    ds3: pd.DataFrame
    polymorphs: pd.DataFrame
    counts: dict
    files: dict[str, Path]
    _graphs: dict = field(default_factory=dict, repr=False)

    def frames(self) -> dict[str, pd.DataFrame]:
        return {"DS1": self.ds1, "DS2": self.ds2, "DS3": self.ds3}

    def graphs(self, name: str):
        """The :class:`~cgcnn.graphset.GraphSet` of ``"ds1"``, ``"ds2"`` or ``"ds3"`` (loaded once)."""
        from cgcnn.graphset import GraphSet

        if name not in self._graphs:
            self._graphs[name] = GraphSet.load_npz(self.files[f"{name}_graphs"])
        return self._graphs[name]

    def dataset(self, name: str, target: str | None, features, ids: list[str] | None = None):
        """A :class:`~cgcnn.dataset.CrystalDataset` of one dataset with ``target`` as label."""
        from cgcnn.dataset import CrystalDataset

        frame = getattr(self, name)
        if ids is None:
            ids = list(frame["material_id"])
        targets = None if target is None else dict(zip(frame["material_id"], frame[target].astype(float)))
        if targets is not None:
            targets = {m: targets[m] for m in ids}
        return CrystalDataset(self.graphs(name), targets, features, ids=ids)

    def ds3_with_ds2_polymorphs(self) -> list[str]:
        """DS3 ids that share a reduced formula with a DS2 material (ETL polymorph report)."""
        p = self.polymorphs
        if p is None or len(p) == 0 or "dataset" not in p:
            return []
        return sorted(set(p.loc[p["dataset"].astype(str).str.lower() == "ds2", "ds3_id"].astype(str)))


def load_data(run_dir: str | os.PathLike) -> StudyData:
    """Read what :func:`run_etl_stage` recorded in ``<run>/data/etl.json``."""
    from cgcnn.classes import classify_frame

    run = Path(run_dir)
    meta_path = run_paths(run)["data"] / "etl.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: run the ETL stage (01-data-preparation/01-etl.ipynb) first")
    meta = json.loads(meta_path.read_text())
    files = {k: (run / v if not os.path.isabs(v) else Path(v)) for k, v in meta["files"].items()}
    frames = {}
    for ds in ("ds1", "ds2", "ds3"):
        df = pd.read_csv(files[f"{ds}_csv"], dtype={"material_id": str})
        frames[ds] = classify_frame(df, formula_col="formula", spacegroup_col="spacegroup_number")
    poly_path = files.get("polymorphs")
    try:
        polymorphs = pd.read_csv(poly_path, dtype=str) if poly_path and poly_path.is_file() else pd.DataFrame()
    except pd.errors.EmptyDataError:
        polymorphs = pd.DataFrame()
    return StudyData(run, frames["ds1"], frames["ds2"], frames["ds3"], polymorphs, meta["counts"], files)


# --------------------------------------------------------------------------------------
# Stage 3: base model M1 on DS1
# --------------------------------------------------------------------------------------
@dataclass
class BaseResult:
    """M1: its checkpoint, training history and DS1 train/validation/test metrics."""

    checkpoint: Path
    history: pd.DataFrame
    metrics: pd.DataFrame
    best_epoch: int
    seconds: float
    n_crystals: int


def _metrics_row(y_true, y_pred) -> dict:
    from cgcnn.metrics import regression_metrics

    return regression_metrics(np.asarray(y_true, float), np.asarray(y_pred, float))


def train_base(run_dir: str | os.PathLike, profile: StudyProfile, *, progress: bool = False) -> BaseResult:
    """Train M1 on DS1 (PBE gaps) into ``<run>/models/m1/`` and score it on the DS1 splits.

    ``profile.base.max_crystals`` limits DS1 to a random subset (seeded by the base seed).
    """
    from cgcnn.checkpoint import load_checkpoint
    from cgcnn.features import AtomFeatures
    from cgcnn.inference import predict
    from cgcnn.train import fit

    profile.apply_threads()

    run = Path(run_dir)
    paths = run_paths(run)
    data = load_data(run)
    ids = list(data.ds1["material_id"])
    limit = profile.base.max_crystals
    if limit is not None and limit < len(ids):
        keep = np.sort(np.random.default_rng(profile.base.train.seed).choice(len(ids), size=limit, replace=False))
        ids = [ids[k] for k in keep]
    dataset = data.dataset("ds1", "bg_pbe", AtomFeatures.default(), ids=ids)
    cfg = profile.train_config(profile.base.train)
    out = paths["models"] / "m1"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    result = fit(dataset, cfg, out, model_config=profile.model, progress=progress,
                 meta={"role": "base", "dataset": "DS1", "profile": profile.name})
    seconds = time.perf_counter() - t0
    loaded = load_checkpoint(result.best_checkpoint)
    pred = predict(loaded, dataset, device=profile.device)
    position = {m: k for k, m in enumerate(dataset.ids)}
    rows = []
    for split, split_ids in result.splits.items():
        pos = [position[m] for m in split_ids]
        if pos:
            rows.append({"split": split, **_metrics_row(dataset.y[pos], pred[pos])})
    metrics = pd.DataFrame(rows).set_index("split")
    write_table(paths["tables"] / "m1_ds1_metrics.csv", metrics)
    write_table(paths["tables"] / "m1_history.csv", result.history, index=False)
    return BaseResult(result.best_checkpoint, result.history, metrics, result.best_epoch, seconds, len(dataset))


def base_checkpoint(run_dir: str | os.PathLike) -> Path:
    path = run_paths(run_dir)["models"] / "m1" / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the base-model stage (02-ml-dev/01-base-model.ipynb) first")
    return path


# --------------------------------------------------------------------------------------
# Stage 4: domain adaptation on DS2 and the control
# --------------------------------------------------------------------------------------
CONTROL = "control"


def model_key(policy: str) -> str:
    """Name of an adapted model (``m2_<policy>``) or ``control``."""
    return CONTROL if policy == CONTROL else f"m2_{policy}"


@dataclass
class AdaptationResult:
    """Every adaptation / control fit and the choices made on DS2 validation MAE.

    Attributes:
        runs: one row per fit: model, policy, lr, seed, phase (``grid`` / ``seeds``),
            best_val_mae, best_epoch, epochs_run, seconds, checkpoint (relative to the run).
        choices: one row per model: chosen lr, mean / std validation MAE over all seeds,
            mean best epoch.
        selected_policy: the freeze policy whose model has the lowest mean validation MAE.
        splits: long table material_id, seed, split (train / val / test) of DS2.
    """

    run_dir: Path
    runs: pd.DataFrame
    choices: pd.DataFrame
    selected_policy: str
    splits: pd.DataFrame
    seeds: list[int]

    def checkpoints(self, model: str) -> dict[int, Path]:
        """Seed -> best checkpoint of ``model`` (``m2``, ``m2_<policy>`` or ``control``) at its chosen lr."""
        if model == "m2":
            model = model_key(self.selected_policy)
        lr = float(self.choices.loc[model, "lr"])
        rows = self.runs[(self.runs["model"] == model) & np.isclose(self.runs["lr"], lr)]
        return {int(r.seed): self.run_dir / r.checkpoint for r in rows.itertuples()}


def _fit_row(kind: str, policy: str, lr: float, seed: int, phase: str, result, seconds: float, run: Path) -> dict:
    return {
        "model": model_key(policy) if kind == "m2" else CONTROL,
        "policy": policy,
        "lr": lr,
        "seed": seed,
        "phase": phase,
        "best_val_mae": result.best_val_mae,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "seconds": round(seconds, 2),
        "checkpoint": os.path.relpath(result.best_checkpoint, run),
    }


def run_adaptation(run_dir: str | os.PathLike, profile: StudyProfile, *, progress: bool = False,
                   echo=print) -> AdaptationResult:
    """Fine-tune M1 on DS2 for every freeze policy, and train the control from scratch.

    For each seed, DS2 is split once (``adapt.train.val_fraction`` for validation); every
    model of that seed sees the same split.  Learning rates are compared on the first
    ``adapt.selection_seeds`` seeds; the remaining seeds are trained at the chosen rate only.
    Nothing here looks at DS3.
    """
    from cgcnn.adapt import adapt, train_control
    from cgcnn.checkpoint import load_checkpoint
    from cgcnn.config import AdaptConfig
    from cgcnn.train import split_indices

    profile.apply_threads()

    run = Path(run_dir)
    paths = run_paths(run)
    data = load_data(run)
    base = load_checkpoint(base_checkpoint(run))
    dataset = data.dataset("ds2", "bg_exp", base.features)
    settings = profile.adapt
    seeds = list(profile.seeds)
    n_sel = len(seeds) if settings.selection_seeds is None else min(settings.selection_seeds, len(seeds))
    selection_seeds = seeds[:n_sel]
    splits = {s: split_indices(len(dataset), settings.train.val_fraction, settings.train.test_fraction, s) for s in seeds}
    split_rows = [
        {"material_id": dataset.ids[k], "seed": s, "split": name}
        for s, parts in splits.items() for name, pos in zip(("train", "val", "test"), parts) for k in pos
    ]
    for folder in ("m2", CONTROL):
        shutil.rmtree(paths["models"] / folder, ignore_errors=True)

    def one(policy: str, lr: float, seed: int, phase: str) -> dict:
        kind = "control" if policy == CONTROL else "m2"
        out = paths["models"] / (CONTROL if kind == "control" else f"m2/{policy}") / f"lr-{lr:g}" / f"seed-{seed}"
        t0 = time.perf_counter()
        if kind == "control":
            cfg = profile.train_config(settings.control, lr=lr, seed=seed)
            result = train_control(dataset, cfg, out, model_config=base.model_config, splits=splits[seed], progress=progress)
        else:
            cfg = profile.train_config(settings.train, lr=lr, seed=seed)
            acfg = AdaptConfig(freeze=policy, normalizer=settings.normalizer, train=cfg)
            result = adapt(base, dataset, acfg, out, splits=splits[seed], progress=progress)
        row = _fit_row(kind, policy, lr, seed, phase, result, time.perf_counter() - t0, run)
        echo(f"{row['model']:>14}  lr {lr:<8g} seed {seed:<3} val MAE {row['best_val_mae']:.4f} eV "
             f"(best epoch {row['best_epoch']}, {row['epochs_run']} run, {row['seconds']:.1f} s)")
        return row

    rows: list[dict] = []
    for policy in [*settings.policies, CONTROL]:
        grid = settings.control_grid if policy == CONTROL else settings.lr_grid
        for lr in grid:
            for seed in selection_seeds:
                rows.append(one(policy, lr, seed, "grid"))
        key = model_key(policy)
        grid_rows = pd.DataFrame([r for r in rows if r["model"] == key])
        mean_by_lr = grid_rows.groupby("lr", sort=False)["best_val_mae"].mean()
        best_lr = float(mean_by_lr.idxmin())  # ties: the first rate of the grid
        for seed in seeds[n_sel:]:
            rows.append(one(policy, best_lr, seed, "seeds"))

    runs = pd.DataFrame(rows)
    choices = []
    for key, grp in runs.groupby("model", sort=False):
        grid_mean = grp[grp["phase"] == "grid"].groupby("lr", sort=False)["best_val_mae"].mean()
        lr = float(grid_mean.idxmin())
        at_lr = grp[np.isclose(grp["lr"], lr)]
        choices.append({
            "model": key, "policy": grp["policy"].iloc[0], "lr": lr,
            "val_mae": at_lr["best_val_mae"].mean(), "val_mae_std": at_lr["best_val_mae"].std(),
            "best_epoch": at_lr["best_epoch"].mean(), "seeds": len(at_lr),
        })
    choices = pd.DataFrame(choices).set_index("model")
    adapted = choices[choices.index != CONTROL]
    selected = str(adapted["val_mae"].idxmin()).removeprefix("m2_")
    choices["selected"] = choices.index == model_key(selected)
    split_table = pd.DataFrame(split_rows)
    write_table(paths["tables"] / "adaptation_runs.csv", runs, index=False)
    write_table(paths["tables"] / "adaptation_choices.csv", choices)
    write_table(paths["tables"] / "ds2_splits.csv", split_table, index=False)
    write_json(paths["models"] / "adaptation.json", {
        "selected_policy": selected, "seeds": seeds, "selection_seeds": selection_seeds,
        "learning_rates": {k: float(v) for k, v in choices["lr"].items()},
    })
    return AdaptationResult(run, runs, choices, selected, split_table, seeds)


def load_adaptation(run_dir: str | os.PathLike) -> AdaptationResult:
    """Read back what :func:`run_adaptation` wrote."""
    run = Path(run_dir)
    paths = run_paths(run)
    meta_path = paths["models"] / "adaptation.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: run the domain-adaptation stage first")
    meta = json.loads(meta_path.read_text())
    runs = pd.read_csv(paths["tables"] / "adaptation_runs.csv")
    choices = pd.read_csv(paths["tables"] / "adaptation_choices.csv").set_index("model")
    splits = pd.read_csv(paths["tables"] / "ds2_splits.csv", dtype={"material_id": str})
    return AdaptationResult(run, runs, choices, meta["selected_policy"], splits, list(meta["seeds"]))


# --------------------------------------------------------------------------------------
# DS3 evaluation
# --------------------------------------------------------------------------------------
MODEL_LABELS = {
    "pbe": "PBE (raw)",
    "pbe_linear": "PBE, linear correction",
    "hse06": "HSE06",
    "g0w0": "G0W0",
    "m1": "M1 (base, DS1)",
    "m2": "M2 (selected policy)",
    "m2_none": "M2, nothing frozen",
    "m2_embedding": "M2, embedding frozen",
    "m2_convs": "M2, embedding + convs frozen",
    "m2_head": "M2, all but output frozen",
    "control": "control (DS2 from scratch)",
}
_METRIC_KEYS = ("mae", "rmse", "r2", "max_error", "n")


@dataclass
class Ds3Evaluation:
    """DS3 scores of every model and baseline.

    Attributes:
        per_seed: long table model, seed, mae, rmse, r2, max_error, n.
        summary: index model; label, mae, mae_std, rmse, rmse_std, r2, r2_std, max_error, n, seeds.
        summary_no_polymorphs: the same without the DS3 materials that have a DS2 polymorph.
        excluded: those DS3 ids.
        predictions: DS3 rows with one column per model (mean prediction over seeds).
        per_seed_predictions: long table material_id, model, seed, prediction.
        metrics_path: where ``metrics.json`` was written.
    """

    per_seed: pd.DataFrame
    summary: pd.DataFrame
    summary_no_polymorphs: pd.DataFrame
    excluded: list[str]
    predictions: pd.DataFrame
    per_seed_predictions: pd.DataFrame
    metrics_path: Path


def _summarise(per_seed_pred: pd.DataFrame, truth: pd.Series, ids: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-seed metrics and their mean ± std over seeds, on the DS3 rows ``ids``."""
    rows = []
    wanted = set(ids)
    for (model, seed), grp in per_seed_pred.groupby(["model", "seed"], sort=False, dropna=False):
        grp = grp[grp["material_id"].isin(wanted)]
        rows.append({"model": model, "seed": seed, **_metrics_row(truth.loc[grp["material_id"]].to_numpy(), grp["prediction"])})
    per_seed = pd.DataFrame(rows)
    out = []
    for model, grp in per_seed.groupby("model", sort=False):
        row = {"model": model, "label": MODEL_LABELS.get(model, model)}
        for key in ("mae", "rmse", "r2", "max_error"):
            row[key] = grp[key].mean()
            row[f"{key}_std"] = grp[key].std(ddof=1) if len(grp) > 1 else np.nan
        row["n"] = int(grp["n"].max())
        row["seeds"] = int(grp["seed"].nunique()) if grp["seed"].notna().all() else 1
        out.append(row)
    summary = pd.DataFrame(out).set_index("model")
    return per_seed, summary


def _metrics_json_block(summary: pd.DataFrame) -> dict:
    models = {}
    for model, row in summary.iterrows():
        entry = {k: (int(row[k]) if k == "n" else float(row[k])) for k in _METRIC_KEYS}
        entry["label"] = row["label"]
        entry["seeds"] = int(row["seeds"])
        if row["seeds"] > 1:
            for k in ("mae", "rmse", "r2"):
                entry[f"{k}_std"] = float(row[f"{k}_std"])
        models[str(model)] = entry
    return models


def evaluate_ds3(run_dir: str | os.PathLike, profile: StudyProfile, adaptation: AdaptationResult | None = None) -> Ds3Evaluation:
    """Score raw and linear-corrected PBE, HSE06, G0W0, M1, every M2 variant and the control on DS3.

    The linear correction is fitted per seed on that seed's DS2 adaptation *training* split.
    Writes ``metrics.json`` (atomically) and ``tables/ds3_*.csv``.
    """
    from cgcnn.checkpoint import load_checkpoint
    from cgcnn.inference import predict
    from cgcnn.metrics import LinearCorrection

    profile.apply_threads()

    run = Path(run_dir)
    paths = run_paths(run)
    data = load_data(run)
    adaptation = adaptation or load_adaptation(run)
    ds3 = data.ds3.set_index("material_id", drop=False)
    base = load_checkpoint(base_checkpoint(run))
    ds3_set = data.dataset("ds3", "bg_exp", base.features)
    ids = list(ds3_set.ids)
    truth = ds3.loc[ids, "bg_exp"].astype(float)
    long: list[pd.DataFrame] = []

    def add(model: str, seed, values) -> None:
        long.append(pd.DataFrame({"material_id": ids, "model": model, "seed": seed, "prediction": np.asarray(values, float)}))

    add("pbe", np.nan, ds3.loc[ids, "bg_pbe"].astype(float))
    ds2 = data.ds2.set_index("material_id")
    for seed in adaptation.seeds:
        train_ids = adaptation.splits.loc[(adaptation.splits["seed"] == seed) & (adaptation.splits["split"] == "train"), "material_id"]
        corr = LinearCorrection.fit(ds2.loc[train_ids, "bg_pbe"].astype(float), ds2.loc[train_ids, "bg_exp"].astype(float))
        add("pbe_linear", seed, corr.predict(ds3.loc[ids, "bg_pbe"].astype(float)))
    for col, name in (("bg_hse06", "hse06"), ("bg_g0w0", "g0w0")):
        if col in ds3.columns:
            add(name, np.nan, pd.to_numeric(ds3.loc[ids, col], errors="coerce"))
    add("m1", np.nan, predict(base, ds3_set, device=profile.device))
    models = [model_key(p) for p in profile.adapt.policies] + [CONTROL]
    for model in models:
        for seed, ckpt in sorted(adaptation.checkpoints(model).items()):
            pred = predict(load_checkpoint(ckpt), ds3_set, device=profile.device)
            add(model, seed, pred)
            if model == model_key(adaptation.selected_policy):
                add("m2", seed, pred)
    per_seed_pred = pd.concat(long, ignore_index=True)

    order = [m for m in MODEL_LABELS if m in set(per_seed_pred["model"])]
    per_seed, summary = _summarise(per_seed_pred, truth, ids)
    summary = summary.loc[order]
    excluded = [m for m in data.ds3_with_ds2_polymorphs() if m in set(ids)]
    kept = [m for m in ids if m not in set(excluded)]
    _, summary_np = _summarise(per_seed_pred, truth, kept)
    summary_np = summary_np.loc[order]

    mean_pred = per_seed_pred.groupby(["material_id", "model"], sort=False)["prediction"].mean().unstack("model")
    predictions = ds3.loc[ids, [c for c in ("material_id", "formula", "bg_exp", "bg_pbe", "anion_class", "crystal_system") if c in ds3.columns]].copy()
    for model in order:
        predictions[f"pred_{model}"] = mean_pred.loc[ids, model].to_numpy()
    predictions = predictions.reset_index(drop=True)

    write_table(paths["tables"] / "ds3_metrics.csv", summary)
    write_table(paths["tables"] / "ds3_metrics_without_ds2_polymorphs.csv", summary_np)
    write_table(paths["tables"] / "ds3_metrics_per_seed.csv", per_seed, index=False)
    write_table(paths["tables"] / "ds3_predictions.csv", predictions, index=False)
    write_table(paths["tables"] / "ds3_predictions_per_seed.csv", per_seed_pred, index=False)
    metrics = {
        "models": _metrics_json_block(summary),
        "ds3_without_ds2_polymorphs": {"excluded": excluded, "models": _metrics_json_block(summary_np)},
        "selected_policy": adaptation.selected_policy,
        "learning_rates": {k: float(v) for k, v in adaptation.choices["lr"].items()},
        "seeds": adaptation.seeds,
        "profile": profile.name,
        "n_ds3": len(ids),
        "note": "mae/rmse/r2: mean over seeds where a model has seeds (then *_std is the sample std over seeds)",
    }
    write_json(paths["metrics"], metrics)
    return Ds3Evaluation(per_seed, summary, summary_np, excluded, predictions, per_seed_pred, paths["metrics"])


def display_table(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``summary`` with ``mae``/``rmse``/``r2`` as ``"mean ± std"`` strings (for reading)."""
    out = pd.DataFrame(index=summary.index)
    out["model"] = summary["label"]
    for key in ("mae", "rmse", "r2"):
        out[key.upper() if key != "r2" else "R²"] = [
            f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if pd.notna(s) else "")
            for m, s in zip(summary[key], summary[f"{key}_std"])
        ]
    out["n"] = summary["n"]
    out["seeds"] = summary["seeds"]
    return out


def parity_columns(evaluation: Ds3Evaluation) -> dict[str, str]:
    """Panel title -> prediction column of ``evaluation.predictions`` (for parity plots)."""
    return {MODEL_LABELS.get(c[5:], c[5:]): c for c in evaluation.predictions.columns if c.startswith("pred_")}


# --------------------------------------------------------------------------------------
# Stage 5: embeddings for t-SNE
# --------------------------------------------------------------------------------------
@dataclass
class Embeddings:
    """Crystal features of DS2 and DS3 from one model.

    ``conv``: pooled features after the last convolution [n, atom_fea_len];
    ``hidden``: the post-FC vector feeding the output layer [n, h_fea_len].
    """

    model: str
    checkpoint: Path
    frames: dict[str, pd.DataFrame]
    conv: dict[str, np.ndarray]
    hidden: dict[str, np.ndarray]

    def layer(self, name: Literal["conv", "hidden"]) -> dict[str, np.ndarray]:
        return self.conv if name == "conv" else self.hidden


def model_checkpoint(run_dir: str | os.PathLike, model: str, seed: int | None = None) -> Path:
    """Checkpoint of ``m1``, ``m2`` (selected policy), ``m2_<policy>`` or ``control`` (first seed by default)."""
    if model == "m1":
        return base_checkpoint(run_dir)
    ckpts = load_adaptation(run_dir).checkpoints(model)
    return ckpts[seed if seed is not None else min(ckpts)]


def embed_datasets(run_dir: str | os.PathLike, profile: StudyProfile, model: str = "m2", *,
                   datasets: tuple[str, ...] = ("ds2", "ds3"), seed: int | None = None) -> Embeddings:
    """Last-convolution features and post-FC vectors of ``datasets`` from one model."""
    from cgcnn.checkpoint import load_checkpoint
    from cgcnn.inference import embed_dataset

    profile.apply_threads()

    data = load_data(run_dir)
    ckpt = model_checkpoint(run_dir, model, seed)
    loaded = load_checkpoint(ckpt)
    frames, conv, hidden = {}, {}, {}
    for name in datasets:
        ds = data.dataset(name, None, loaded.features)
        frame = getattr(data, name).set_index("material_id", drop=False).loc[ds.ids].reset_index(drop=True)
        c, h = embed_dataset(loaded, ds, device=profile.device)
        frames[name], conv[name], hidden[name] = frame, c, h
    return Embeddings(model, ckpt, frames, conv, hidden)


def tsne_table(embeddings: Embeddings, tsne, *, fitted: str = "ds2", projected: str = "ds3") -> pd.DataFrame:
    """t-SNE coordinates with material id, dataset, formula, gaps and classes (one row per crystal)."""
    cols = [c for c in ("material_id", "formula", "bg_exp", "bg_pbe", "anion_class", "crystal_system", "n_elements")]
    parts = []
    for name, xy in ((fitted, tsne.fitted), (projected, tsne.projected)):
        frame = embeddings.frames[name]
        part = frame[[c for c in cols if c in frame.columns]].copy()
        part.insert(1, "dataset", name.upper())
        part["x"], part["y"] = xy[:, 0], xy[:, 1]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def adaptation_histories(adaptation: AdaptationResult, seed: int | None = None) -> dict[str, pd.DataFrame]:
    """Model -> training history (``history.csv``) of its chosen-lr fit for ``seed`` (default: first)."""
    out = {}
    for model in adaptation.choices.index:
        ckpts = adaptation.checkpoints(model)
        if not ckpts:
            continue
        path = Path(ckpts[seed if seed is not None else min(ckpts)]).parent / "history.csv"
        if path.is_file():
            out[MODEL_LABELS.get(model, model)] = pd.read_csv(path)
    return out
