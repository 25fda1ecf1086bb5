"""The public way to use a trained model: ``load_model(...)`` → ``predict`` / ``embed``.

A :class:`Predictor` wraps one loaded checkpoint with the graph settings and atom-feature
table it was trained with, so that structures go in and band gaps (eV) come out without
assembling graphs, datasets and batches by hand::

    from cgcnn import load_model
    model = load_model("runs/default-…/models/m1/best.pt")
    table = model.predict(structure)              # DataFrame: material_id, prediction_ev, prediction_std_ev, n_members
    table = load_model().predict({"mp-2534": gaas}, pbe={"mp-2534": 0.19})   # the shipped ensemble, a known PBE gap

``load_model()`` with no argument loads the shipped ensemble (experimental gaps with an
uncertainty); ``load_model("base")`` the shipped base model M1 (PBE-like gaps).

Inputs are everything :func:`cgcnn.data.building.read_inputs` accepts: pymatgen ``Structure``s
(one, a list, ``{id: structure}``), CIF files or folders, a Materials Project snapshot
(``.jsonl.gz``), or a saved graph set.

(Over 400 lines: the one public entry point — loading any model, naming in-memory structures,
aligning the PBE gaps a user gives, the warnings the CLI prints too — kept together so that the
Python API and ``cgcnn predict`` answer the same inputs the same way.)
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from pathlib import Path

import numpy as np
import pandas as pd

from cgcnn.data.building import read_inputs, snapshot_pbe_gaps, structure_items
from cgcnn.data.dataset import CrystalDataset
from cgcnn.data.descriptors import MAX_PBE_GAP_EV, attach_inputs
from cgcnn.data.graphset import GraphSet
from cgcnn.errors import DatasetError, InputWarning, OnError, Problem
from cgcnn.prediction.ensemble import ensemble_predict
from cgcnn.prediction.inference import embed_dataset
from cgcnn.prediction.shipped import (
    ShippedModelError,
    member_checkpoints,
    shipped_model_dir,
    shipped_models,
)
from cgcnn.prediction.streaming import merge_ordered, stand_in_pbe, unused_pbe_ids
from cgcnn.prediction.trees import load_tree_member
from cgcnn.prediction.trust import TRUST_COLUMNS, check_level, load_trust
from cgcnn.training.checkpoint import Loaded, load_checkpoint

log = logging.getLogger(__name__)


@dataclass
class Embeddings:
    """Crystal features of the last convolution layer and post-FC vectors.

    Shapes (n crystals): ``conv`` [n, atom_fea_len], ``hidden`` [n, h_fea_len].
    """

    ids: list[str]
    conv: np.ndarray
    hidden: np.ndarray
    skipped: list[Problem]


DEFAULT_MODEL = "ensemble"  # the shipped ensemble for experimental gaps (cgcnn/models/ensemble)


class Predictor:
    """A loaded model — one checkpoint or an ensemble of them — ready to predict band gaps
    for structures (see the module docstring and :mod:`cgcnn.prediction.ensemble`).

    Args:
        loaded: one loaded checkpoint, or the members of an ensemble.
        scale: calibration factor of the ensemble's spread.
        pbe_model: predicts the PBE gap that PBE-aware members read when it is not given.
        fidelity: for multi-fidelity models, the fidelity to predict (default: the model's
            last, e.g. ``experiment``).
        trees: boosted trees on composition + PBE (:mod:`cgcnn.prediction.trees`), one more member of
            weight ``trees_weight``.
        trust: calibrated intervals and applicability domain (:class:`cgcnn.prediction.trust.Trust`):
            the table gains ``prediction_lo_ev, prediction_hi_ev, in_domain, domain_note``.
        interval_level: the intervals' central level (default: the calibration's, 0.9).
        adaptation: what ``cgcnn finetune`` fitted on a lab's gaps on top of the ensemble
            (:class:`cgcnn.prediction.adapted.Adaptation`).
    """

    def __init__(
        self,
        loaded: Loaded | Sequence[Loaded],
        *,
        device: str = "auto",
        batch_size: int = 256,
        source: str | None = None,
        scale: float = 1.0,
        pbe_model: Loaded | None = None,
        fidelity: str | None = None,
        trees=None,
        trees_weight: float = 0.5,
        trust=None,
        interval_level: float | None = None,
        adaptation=None,
        backbone=None,
    ):
        self.members = [loaded] if isinstance(loaded, Loaded) else list(loaded)
        if not self.members:
            raise ValueError("a predictor needs at least one checkpoint")
        self.loaded = self.members[0]
        self.device = device
        self.batch_size = batch_size
        self.source = source
        self.scale = float(scale)
        self.pbe_model = pbe_model
        self.fidelity = fidelity
        self.trees = trees
        self.trees_weight = float(trees_weight)
        self.trust = trust
        self.interval_level = interval_level
        self.adaptation = adaptation
        self.backbone = backbone  # a CHGNet model (cgcnn.prediction.backbone.BackboneMember); members = [M1]
        if trust is not None and pbe_model is None:
            raise ValueError("a predictor with intervals needs the feature model (pbe_model)")
        if interval_level is not None:
            check_level(interval_level)

    def __repr__(self) -> str:
        return (
            f"Predictor(source={self.source!r}, members={len(self.members)}, graphs={self.loaded.graph_config.key()}, "
            f"model={self.loaded.model_config.to_dict()})"
        )

    @property
    def pbe_aware(self) -> bool:
        return self.backbone is not None or self.loaded.model_config.pbe_input

    @property
    def columns(self) -> list[str]:
        """The columns of :meth:`predict`'s table."""
        cols = ["material_id", "prediction_ev", "prediction_std_ev", "n_members"]
        cols += ["pbe_gap_ev", "pbe_gap_source"] if self.pbe_aware else []
        return cols + (TRUST_COLUMNS if self.trust is not None else [])

    def dataset(
        self,
        structures,
        *,
        on_error: OnError = "skip",
        workers: int = 1,
        progress: bool = False,
        disorder: str = "refuse",
    ) -> CrystalDataset:
        """The crystals of ``structures`` as a dataset for this model (bad items skipped and
        listed in ``.problems``, or raised with ``on_error="error"``).  ``disorder``: see
        :func:`cgcnn.data.building.build_graphs`.

        Raises:
            DatasetError: no structure could be read.
        """
        graphs, problems = read_inputs(
            structures,
            self.loaded.graph_config,
            workers=workers,
            on_error=on_error,
            progress=progress,
            disorder=disorder,
        )
        ds = CrystalDataset(graphs, None, self.loaded.features, on_error=on_error)
        ds.problems = problems + ds.problems
        if self.backbone is not None:  # CHGNet reads the structures themselves
            from cgcnn.prediction.backbone import read_structures

            ds.structures = read_structures(structures, set(ds.ids))
        if len(ds) == 0:
            first = f" (first: {ds.problems[0]})" if ds.problems else ""
            raise DatasetError(
                f"no structure could be read from {_describe(structures)}; {len(ds.problems)} skipped{first}"
            )
        return ds

    def predict_dataset(self, ds: CrystalDataset, *, pbe: Mapping[str, float] | None = None) -> pd.DataFrame:
        """The table of :meth:`predict` for a ready dataset."""
        if self.adaptation is not None:
            return self.adaptation.predict(self, ds, pbe)
        if self.backbone is not None:
            return self.backbone.predict(self, ds, pbe)
        return ensemble_predict(
            self.members,
            ds,
            pbe=pbe,
            pbe_model=self.pbe_model,
            scale=self.scale,
            fidelity=self.fidelity,
            trees=self.trees,
            trees_weight=self.trees_weight,
            trust=self.trust,
            level=self.interval_level,
            batch_size=self.batch_size,
            device=self.device,
        )

    def predict(
        self,
        structures,
        *,
        pbe: Mapping[str, float] | Sequence[float | None] | float | None = None,
        ids: str | Sequence[str] | None = None,
        on_error: OnError = "skip",
        workers: int = 1,
        progress: bool = False,
        disorder: str = "refuse",
    ) -> pd.DataFrame:
        """Band gaps in eV: a DataFrame with ``material_id, prediction_ev,
        prediction_std_ev, n_members`` (and ``pbe_gap_ev, pbe_gap_source`` for PBE-aware
        models; ``prediction_lo_ev, prediction_hi_ev, in_domain, domain_note`` for a model with
        a calibration, e.g. the shipped ensemble: the central interval at ``interval_level``
        and whether the crystal is in the model's applicability domain) in input order.

        Ids: the keys of ``{id: structure}``, a CIF's file name without the suffix, a
        snapshot's ``material_id``; a single structure is ``"0"`` and a list ``"0", "1", …``
        unless ``ids`` names them (one id per structure).

        ``pbe``: known PBE gaps (eV) — ``{id: gap}``, or, for structures given in memory, one
        number for one structure or a list aligned with them (``None`` where unknown).  A
        Materials Project snapshot's own ``band_gap`` values are used for the materials
        ``pbe`` does not name.  Given ids that name no input structure are said in an
        :class:`~cgcnn.errors.InputWarning` (as ``cgcnn predict --pbe-gaps`` says them).

        Skipped items (a structure the checks refuse) have no row: an
        :class:`~cgcnn.errors.InputWarning` names them, and they are in ``.attrs["skipped"]``
        (list of :class:`Problem`); ``on_error="error"`` raises instead.  ``disorder``
        (``refuse``, ``end-members``, ``orderings``; :mod:`cgcnn.data.disorder`): what becomes
        of partially occupied sites; with a method the table has a column ``disorder`` naming it.

        Raises:
            DatasetError: no structure could be read, or ``ids`` / ``pbe`` do not match the
                structures (the message says how).
        """
        structures = _named(structures, ids)
        pbe = _pbe_by_id(pbe, structures)
        given = set(pbe or ())
        if pbe and not self.pbe_aware:
            _warn("pbe is ignored: this model does not read PBE gaps")
        ds = self.dataset(structures, on_error=on_error, workers=workers, progress=progress, disorder=disorder)
        _warn_skipped(ds.problems)
        if self.pbe_aware:  # a snapshot's own PBE gaps count as given; the caller's take precedence
            pbe = {**snapshot_pbe_gaps(structures), **(pbe or {})}
            seen = set(ds.ids) | {p.item_id for p in ds.problems}
            for p in unused_pbe_ids(given, seen, name="pbe", hint=_id_hint(structures)):
                _warn(str(p))
        if disorder != "refuse":
            table = merge_ordered(self.predict_dataset(ds, pbe=stand_in_pbe(pbe, ds.ids)), disorder)
            table.attrs["skipped"] = list(ds.problems)
            return table
        table = self.predict_dataset(ds, pbe=pbe)
        table.attrs["skipped"] = list(ds.problems)
        return table

    def embed(
        self,
        structures,
        *,
        ids: str | Sequence[str] | None = None,
        on_error: OnError = "skip",
        workers: int = 1,
        progress: bool = False,
    ) -> Embeddings:
        """Last-convolution crystal features and post-FC vectors of ``structures`` (``ids``
        and skipped items as in :meth:`predict`)."""
        ds = self.dataset(_named(structures, ids), on_error=on_error, workers=workers, progress=progress)
        _warn_skipped(ds.problems)
        attach_inputs(ds, self.loaded.model_config, fidelity=self.fidelity)
        conv, hidden = embed_dataset(self.loaded, ds, batch_size=self.batch_size, device=self.device)
        return Embeddings(list(ds.ids), conv, hidden, list(ds.problems))


def _warn(text: str, stacklevel: int = 3) -> None:
    """An :class:`InputWarning` pointing at the caller of ``predict`` / ``embed``."""
    warnings.warn(text, InputWarning, stacklevel=stacklevel)


def _warn_skipped(problems: list[Problem]) -> None:
    """One warning naming the skipped items (they have no row)."""
    skipped = [p for p in problems if p.kind != "warning"]
    if skipped:
        first = "; ".join(str(p) for p in skipped[:3]) + (" …" if len(skipped) > 3 else "")
        _warn(
            f"{len(skipped)} input(s) skipped and left out of the table, so rows follow the remaining inputs "
            f"(match them by material_id): {first}; all of them in .attrs['skipped']",
            stacklevel=4,
        )


def _in_memory(structures) -> bool:
    """Structures given as Python objects (one, a list, or ``{id: structure}``), not files or a graph set."""
    if isinstance(structures, (str, Path, GraphSet)):
        return False
    if isinstance(structures, Mapping) or not isinstance(structures, Sequence):
        return True
    return not all(isinstance(x, (str, Path)) for x in structures)


def _named(structures, ids):
    """``{id: structure}`` for one structure or a list of them named by ``ids`` (unchanged without ids)."""
    if ids is None:
        return structures
    if not _in_memory(structures) or isinstance(structures, Mapping):
        raise DatasetError(
            "ids= names structures given as one structure or a list of them; files are named by their file names "
            "and {id: structure} by its keys: leave ids out"
        )
    from pymatgen.core import Structure  # a Structure is also a sequence (of sites)

    items = (
        [structures] if isinstance(structures, Structure) or not isinstance(structures, Sequence) else list(structures)
    )
    names = [ids] if isinstance(ids, str) else [str(i) for i in ids]
    if len(names) != len(items):
        raise DatasetError(f"ids= gives {len(names)} id(s) for {len(items)} structure(s); give one id per structure")
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise DatasetError(f"ids= names {twice!r} twice; give every structure its own id")
    return dict(zip(names, items))


def _pbe_by_id(pbe, structures) -> dict[str, float] | None:
    """Known PBE gaps by id: ``pbe`` as given, or a number / list aligned with in-memory structures.

    Raises:
        DatasetError: a number or list that cannot be aligned, or a gap below 0 or above 30 eV.
    """
    if pbe is None:
        return None
    if isinstance(pbe, Mapping):
        out = {str(k): v for k, v in pbe.items()}
    else:
        if isinstance(pbe, str) or not _in_memory(structures):
            raise DatasetError(
                "pbe= as a number or a list is aligned with structures given in memory; for files or a graph set "
                "give {material_id: gap} (ids are file names without the suffix)"
            )
        names = [i for i, _ in structure_items(structures)]
        values = [pbe] if isinstance(pbe, Real) else list(pbe)
        if len(values) != len(names):
            raise DatasetError(
                f"pbe= gives {len(values)} gap(s) for {len(names)} structure(s); give one per structure "
                "(None where unknown) or {id: gap}"
            )
        out = dict(zip(names, values))
    for key, value in out.items():
        if value is not None and not isinstance(value, Real):
            raise DatasetError(f"pbe= gives {key!r} the PBE gap {value!r}, not a number; give it in eV")
        if value is not None and not (value != value or 0 <= value <= MAX_PBE_GAP_EV):
            raise DatasetError(
                f"pbe= gives {key!r} the PBE gap {value} eV, outside 0-{MAX_PBE_GAP_EV:g} eV; give it in eV"
            )
    return {k: float(v) for k, v in out.items() if v is not None and v == v}  # None / NaN: unknown


def _id_hint(structures) -> str:
    """How the inputs are named, for the warning about unused PBE-gap ids."""
    if _in_memory(structures) and not isinstance(structures, Mapping):
        return (
            "a single structure is named '0' and a list '0', '1', …: name them with ids=, pass {id: structure}, "
            "or give pbe= as a number (one structure) or a list aligned with the structures"
        )
    if isinstance(structures, Mapping):
        return "ids are the keys of the {id: structure} mapping"
    return "ids are file names without the suffix (or a snapshot's material_id)"


def _describe(inputs) -> str:
    if isinstance(inputs, (str, Path)):
        return str(inputs)
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(x, (str, Path)) for x in inputs):
        return ", ".join(map(str, inputs[:3])) + (" …" if len(inputs) > 3 else "")
    return "the given structures"


def load_model(
    path: str | Path = DEFAULT_MODEL,
    *,
    device: str = "auto",
    batch_size: int = 256,
    atom_features: str | Path | None = None,
    radius: float | None = None,
    max_neighbors: int | None = None,
    fidelity: str | None = None,
    interval_level: float | None = None,
) -> Predictor:
    """Load a model for prediction.

    Args:
        path: the name of a model shipped with the package — ``"ensemble"`` (the default:
            experimental band gaps with an uncertainty, see ``cgcnn/models/MODEL_CARD.md``)
            or ``"base"`` (M1, a PBE-like gap); see :func:`cgcnn.prediction.shipped.shipped_models` —,
            a model folder holding a ``manifest.json`` (a copy of a shipped one, or one written by
            ``cgcnn finetune``: the shipped ensemble adapted to a lab's own gaps),
            one of our self-describing checkpoints (``best.pt``), or an original CGCNN
            ``.pth.tar`` (then give ``atom_features``, ``radius`` and ``max_neighbors``).
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        fidelity: for multi-fidelity models, the fidelity to predict.
        interval_level: level of the central interval ``[prediction_lo_ev, prediction_hi_ev]``
            (default 0.9) of a model shipped with a calibration.

    Raises:
        CheckpointError: the file is not a usable checkpoint (the message says why).
        ShippedModelError: no such shipped model and no such file.
    """
    folder = Path(path)
    shipped = not folder.exists() and (str(path) in shipped_models() or str(path) == DEFAULT_MODEL)
    if shipped or (folder.is_dir() and (folder / "manifest.json").is_file()):
        folder = shipped_model_dir(str(path)) if shipped else folder
        source = f"shipped:{path}" if shipped else str(folder)
        return _from_folder(
            folder, source, device=device, batch_size=batch_size, fidelity=fidelity, level=interval_level
        )
    loaded = load_checkpoint(
        path, atom_features=atom_features, radius=radius, max_neighbors=max_neighbors, device="cpu"
    )
    return Predictor(loaded, device=device, batch_size=batch_size, source=str(path), fidelity=fidelity)


def _from_folder(folder: Path, source: str, *, device, batch_size, fidelity, level) -> Predictor:
    """A model folder holding ``manifest.json``: a shipped one, or one written by ``cgcnn finetune``
    (``"kind": "adapted"``, :mod:`cgcnn.prediction.adapted`)."""
    info = json.loads((folder / "manifest.json").read_text())
    if info.get("backbone"):  # a model on another backbone (CHGNet), selected by the study's CV
        return _backbone_folder(folder, info, device=device, batch_size=batch_size, level=level)
    adaptation = None
    if info.get("kind") == "adapted":  # the shipped ensemble adapted to a lab's gaps (cgcnn finetune)
        from cgcnn.prediction.adapted import Adaptation

        adaptation = Adaptation.load(folder, info["adaptation"])
    named = [folder / f for f in info.get("member_files", [])]
    files = named or sorted(folder.glob("member-*.pt")) or [folder / "model.pt"]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise ShippedModelError(f"model {source!r} is incomplete: {missing[0]} is missing; reinstall or rebuild it")
    members = [load_checkpoint(f, device="cpu") for f in files]
    pbe_model = None
    if info.get("pbe_model"):  # a file beside the members, or another shipped model
        own = folder / info["pbe_model"]
        pbe_model = load_checkpoint(own if own.is_file() else member_checkpoints(info["pbe_model"])[0], device="cpu")
    scale = float((info.get("calibration") or {}).get("scale", 1.0))
    trust = load_trust(folder) if pbe_model is not None else None
    trees, weight = None, 0.5
    if info.get("trees"):  # boosted trees on composition + PBE, stored with skops (no pickle)
        trees, weight = load_tree_member(folder, info["trees"]), info["trees"]["weight"]
    return Predictor(
        members,
        device=device,
        batch_size=batch_size,
        source=source,
        scale=scale,
        pbe_model=pbe_model,
        fidelity=fidelity,
        trees=trees,
        trees_weight=weight,
        trust=trust,
        interval_level=level,
        adaptation=adaptation,
    )


def _backbone_folder(folder: Path, info: dict, *, device, batch_size, level) -> Predictor:
    """A model folder whose model is on another backbone (``"backbone"``: its sub-folder,
    :mod:`cgcnn.prediction.backbone`), with M1 (``pbe_model``) for missing PBE gaps and the domain."""
    from cgcnn.prediction.backbone import BackboneMember, BackboneModel

    pbe_model = load_checkpoint(folder / info["pbe_model"], device="cpu")
    trees, weight = None, 0.5
    if info.get("trees"):
        trees, weight = load_tree_member(folder, info["trees"]), info["trees"]["weight"]
    return Predictor(
        pbe_model,
        device=device,
        batch_size=batch_size,
        source=str(folder),
        scale=float((info.get("calibration") or {}).get("scale", 1.0)),
        pbe_model=pbe_model,
        trees=trees,
        trees_weight=weight,
        trust=load_trust(folder),
        interval_level=level,
        backbone=BackboneMember(BackboneModel.load(folder / info["backbone"])),
    )
