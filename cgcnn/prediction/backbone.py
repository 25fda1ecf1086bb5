"""A fitted backbone candidate (CHGNet) stored in a model folder, and its predictions.

The folder holds ``backbone.json`` (format, backbone, model version, candidate, how much was
trained, whether the head reads Magpie) and the fitted head: for ``frozen``, kernel ridge as plain
arrays (``krr.npz``: the scaler, the training features, the dual coefficients and gamma of the
full fit, and of each bagged refit — no pickle), for ``readout`` / ``block`` the fine-tuned heads
(``member-<k>/best.pt``, :mod:`cgcnn.backbones.heads`).  Every head predicts the correction to
PBE; :meth:`BackboneModel.predict` adds the PBE gap and gives the mean and the spread.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cgcnn.errors import CgcnnError
from cgcnn.fileio import atomic_write_bytes, write_json

FORMAT = 1
MANIFEST = "backbone.json"
__all__ = [
    "BackboneMember",
    "BackboneModel",
    "BackboneModelError",
    "KernelRidgeArrays",
    "read_structures",
    "structures_of",
    "save_backbone",
]


class BackboneModelError(CgcnnError, ValueError):
    """A backbone model folder that cannot be read."""


@dataclass(frozen=True)
class KernelRidgeArrays:
    """An RBF kernel ridge fitted on standardised features, as arrays: prediction
    ``exp(-gamma ||(x - mean) / scale - X_i||²) · dual_coef``."""

    mean: np.ndarray
    scale: np.ndarray
    X: np.ndarray
    dual_coef: np.ndarray
    gamma: float

    @classmethod
    def of(cls, pipeline) -> KernelRidgeArrays:
        """From a fitted ``StandardScaler`` + ``KernelRidge(kernel="rbf")`` pipeline."""
        scaler, krr = pipeline[0], pipeline[-1]
        return cls(
            scaler.mean_, scaler.scale_, np.asarray(krr.X_fit_), np.asarray(krr.dual_coef_).ravel(), float(krr.gamma)
        )

    def predict(self, X: np.ndarray) -> np.ndarray:
        Z = (np.asarray(X, dtype=np.float64) - self.mean) / self.scale
        d2 = (Z**2).sum(1)[:, None] + (self.X**2).sum(1)[None, :] - 2 * Z @ self.X.T
        return np.exp(-self.gamma * np.maximum(d2, 0.0)) @ self.dual_coef


def save_backbone(
    folder: str | os.PathLike, manifest: dict, krr: list | None = None, heads: list | None = None
) -> Path:
    """Write a backbone model folder: ``manifest`` (backbone, version, candidate, train, magpie)
    and either ``krr`` (fitted pipelines: the full fit first, then the bagged refits) or
    ``heads`` (the fits' ``best.pt`` paths, copied as ``member-<k>/best.pt``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    if krr is not None:
        arrays = {}
        for k, pipe in enumerate(krr):
            a = KernelRidgeArrays.of(pipe)
            for name in ("mean", "scale", "X", "dual_coef"):
                arrays[f"{k}_{name}"] = getattr(a, name)
            arrays[f"{k}_gamma"] = np.array(a.gamma)
        import io

        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(folder / "krr.npz", buf.getvalue())
        files = ["krr.npz"]
    for k, checkpoint in enumerate(heads or []):
        out = folder / f"member-{k}" / "best.pt"
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, Path(checkpoint).read_bytes())
        files.append(os.path.relpath(out, folder))
    write_json(folder / MANIFEST, {"format": FORMAT, **manifest, "files": files})
    return folder / MANIFEST


@dataclass
class BackboneModel:
    """A stored backbone candidate (see the module docstring)."""

    folder: Path
    manifest: dict

    @classmethod
    def load(cls, folder: str | os.PathLike) -> BackboneModel:
        folder = Path(folder)
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise BackboneModelError(f"{folder / MANIFEST}: cannot read it ({exc})") from None
        if manifest.get("format") != FORMAT or manifest.get("backbone") != "chgnet":
            raise BackboneModelError(f"{folder / MANIFEST}: not a CHGNet model folder of format {FORMAT}")
        return cls(folder, manifest)

    def features(self, records, magpie: np.ndarray | None, pbe: np.ndarray) -> np.ndarray:
        """The frozen head's inputs: the crystal representation (+ Magpie) and the PBE gap."""
        crystal = np.stack([r.crystal for r in records])
        parts = [crystal, magpie] if self.manifest.get("magpie") else [crystal]
        return np.column_stack([*parts, pbe])

    def predict(self, records, magpie: np.ndarray | None, pbe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, spread) in eV of the gap of crystals with these CHGNet ``records``, Magpie
        features and PBE gaps."""
        pbe = np.asarray(pbe, dtype=np.float64)
        if self.manifest["train"] == "frozen":
            with np.load(self.folder / "krr.npz") as z:
                n = len({k.split("_", 1)[0] for k in z.files})
                models = [
                    KernelRidgeArrays(
                        z[f"{k}_mean"], z[f"{k}_scale"], z[f"{k}_X"], z[f"{k}_dual_coef"], float(z[f"{k}_gamma"])
                    )
                    for k in range(n)
                ]
            X = self.features(records, magpie, pbe)
            bagged = np.vstack([pbe + m.predict(X) for m in models[1:]])
            return pbe + models[0].predict(X), bagged.std(axis=0)
        from cgcnn.backbones.heads import predict_head

        preds = np.vstack([pbe + predict_head(self.folder / f, records) for f in self.manifest["files"]])
        return preds.mean(axis=0), preds.std(axis=0)


def read_structures(inputs, wanted: set[str]) -> dict:
    """id -> pymatgen ``Structure`` of the inputs a prediction was given (in memory, CIF files or
    folders, a snapshot), for the ids in ``wanted`` (those whose graphs passed the checks) —
    parsed as the graph builder parses them, so the ids match."""
    from cgcnn.data.building import _is_snapshot, _saved_graph_set, snapshot_structures, structure_items
    from cgcnn.data.cif import cif_items
    from cgcnn.data.graphset import GraphSet

    if isinstance(inputs, GraphSet) or (isinstance(inputs, (str, Path)) and _saved_graph_set(Path(inputs))):
        raise BackboneModelError(
            "a CHGNet model reads structures, not a saved graph set: give CIF files, a snapshot or pymatgen structures"
        )
    if isinstance(inputs, (str, Path)) or (
        isinstance(inputs, (list, tuple)) and all(isinstance(x, (str, Path)) for x in inputs)
    ):
        paths = [Path(inputs)] if isinstance(inputs, (str, Path)) else [Path(x) for x in inputs]
        items = snapshot_structures(paths[0]) if len(paths) == 1 and _is_snapshot(paths[0]) else cif_items(paths)
    else:
        items = structure_items(inputs)
    return structures_of(items, wanted)


def structures_of(items, wanted: set[str]) -> dict:
    """id -> ``Structure`` of ``(id, CIF text / path / Structure)`` items, for the ids in ``wanted``."""
    from cgcnn.data.building import parse_items

    out = {}
    for item_id, obj in items:
        for sid, structure in parse_items(item_id, obj)[0]:
            if sid in wanted:
                out[sid] = structure
    return out


@dataclass
class BackboneMember:
    """A stored backbone model inside a model folder, as a :class:`~cgcnn.prediction.predictor.Predictor`
    uses it: the Predictor checks the structures and builds their CGCNN graphs (for M1's PBE gap
    where none is given, and for the applicability domain); this adds the CHGNet prediction, the
    trees, the calibrated spread and the intervals."""

    model: BackboneModel

    def predict(self, predictor, ds, pbe) -> pd.DataFrame:
        from cgcnn.backbones.chgnet import FeatureStore
        from cgcnn.data.descriptors import composition_features
        from cgcnn.prediction.ensemble import mix, resolve_pbe
        from cgcnn.prediction.trust import add_trust_columns

        structures = getattr(ds, "structures", None) or {}
        ids = list(ds.ids)
        with tempfile.TemporaryDirectory(prefix="cgcnn-chgnet-") as tmp:
            records = FeatureStore(tmp, self.model.manifest["version"]).records(
                {i: structures[i] for i in ids if i in structures}
            )
        pbe_values, source = resolve_pbe(
            [predictor.pbe_model],
            ds,
            pbe,
            predictor.pbe_model,
            batch_size=predictor.batch_size,
            device=predictor.device,
        )
        magpie = composition_features(ds.graphs)
        mean, std = np.full(len(ids), np.nan), np.full(len(ids), np.nan)
        ok = np.array([i in records for i in ids], dtype=bool)
        if ok.any():
            pos = np.flatnonzero(ok)
            mean[pos], std[pos] = self.model.predict([records[ids[p]] for p in pos], magpie[pos], pbe_values[pos])
        if predictor.trees is not None:
            mean, std = mix(mean, std, predictor.trees.predict(magpie, pbe_values), predictor.trees_weight)
        table = pd.DataFrame(
            {
                "material_id": ids,
                "prediction_ev": np.maximum(mean, 0.0),
                "prediction_std_ev": predictor.scale * std,
                "n_members": len(self.model.manifest["files"]) + (predictor.trees is not None),
                "pbe_gap_ev": pbe_values.astype(np.float64),
                "pbe_gap_source": source,
            }
        )
        if predictor.trust is not None:
            add_trust_columns(
                table,
                std,
                ds,
                predictor.trust,
                predictor.pbe_model,
                level=predictor.interval_level,
                batch_size=predictor.batch_size,
                device=predictor.device,
            )
        return table
