"""The methods candidates on a pretrained universal backbone (CHGNet): the paper's question asked
of another representation, by the same folds, fit cache and selection as the CGCNN candidates.

Every one learns the **correction to PBE** (the prediction is the PBE gap the material reads —
MP's, or M1's prediction where MP has none — plus the head's output), like the PBE-aware CGCNN
candidates (:data:`cgcnn.study.recipes.BACKBONES`):

* ``frozen`` — kernel ridge (RBF) on CHGNet's frozen crystal representation
  (:mod:`cgcnn.backbones.chgnet`), optionally with Magpie composition, and the PBE gap; features
  standardised on the training materials; ``alpha`` and ``gamma`` by inner grouped CV on them.
  Its spread: ``members`` refits on bootstrap resamples of the training formulas (bagging);
* ``readout`` / ``block`` — CHGNet's readout, or its last interaction block and readout,
  fine-tuned from the pretrained weights (:mod:`cgcnn.backbones.heads`), ``members`` seeds, early
  stopping on the fold's inner split; every fit through the fit cache.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cgcnn.backbones.chgnet import ChgnetRecord
from cgcnn.backbones.heads import HeadSettings, fit_head, predict_head
from cgcnn.prediction.inference import resolve_device
from cgcnn.study.fits import FitCache, code_digest
from cgcnn.study.recipes import BACKBONES, Fitted, Materials, Prediction, Recipe

__all__ = ["ChgnetRecipe", "KernelRidgeHead", "records_digest"]
HEAD_MODULES = ("cgcnn.backbones.heads",)


def records_digest(records: list[ChgnetRecord]) -> str:
    """sha256 of the arrays a head reads (so the fit cache keys on the representation itself)."""
    h = hashlib.sha256()
    for r in records:
        for a in (r.atoms, r.pre_atoms, r.bond_feas, r.bond_weights, r.atom_graph, r.d2u):
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


@dataclass
class KernelRidgeHead:
    """RBF kernel ridge on standardised features, hyper-parameters by inner grouped CV."""

    alphas: tuple[float, ...]
    gammas: tuple[float, ...]  # times 1 / number of features
    inner_folds: int = 3

    def _model(self, alpha: float, gamma: float, n_features: int):
        from sklearn.kernel_ridge import KernelRidge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), KernelRidge(kernel="rbf", alpha=alpha, gamma=gamma / n_features))

    def choose(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict:
        from sklearn.model_selection import GroupKFold

        inner = list(GroupKFold(n_splits=min(self.inner_folds, len(set(groups)))).split(X, groups=groups))
        best, best_mae = None, np.inf
        for alpha, gamma in itertools.product(self.alphas, self.gammas):
            mae = np.mean(
                [
                    np.abs(self._model(alpha, gamma, X.shape[1]).fit(X[a], y[a]).predict(X[b]) - y[b]).mean()
                    for a, b in inner
                ]
            )
            if mae < best_mae:
                best, best_mae = {"alpha": alpha, "gamma": gamma}, mae
        return best

    def fit(self, X: np.ndarray, y: np.ndarray, params: dict, weight: np.ndarray | None = None):
        model = self._model(params["alpha"], params["gamma"], X.shape[1])
        return model.fit(X, y) if weight is None else model.fit(X, y, kernelridge__sample_weight=weight)


@dataclass(repr=False)
class ChgnetRecipe(Recipe):
    """A CHGNet candidate (see the module docstring).  ``records``: material id -> its CHGNet
    record, for every material it may fit or predict (DS2 and DS3)."""

    name: str
    label: str
    profile: Any  # cgcnn.study.profiles.StudyProfile
    records: dict[str, ChgnetRecord]
    cache: FitCache
    echo: Callable[[str], Any] = print
    fits: list[dict] = field(default_factory=list)
    views: dict = field(default_factory=dict)  # unused: the PBE gap is read from the materials

    @property
    def spec(self):
        return BACKBONES[self.name]

    def settings(self) -> dict:
        return {"candidate": self.name, "chgnet": self.profile.methods.chgnet.to_dict()}

    def features(self, m: Materials, pos: np.ndarray) -> np.ndarray:
        crystal = np.stack([self.records[m.ids[p]].crystal for p in pos])
        parts = [crystal, m.magpie[pos]] if self.spec.magpie else [crystal]
        return np.column_stack([*parts, m.pbe_read[pos]])

    def fit(self, materials: Materials, train, *, seed: int, split=None, tag: dict | None = None) -> Fitted:
        """Fit on the training positions whose crystal has a CHGNet record; the fitted model
        predicts NaN for a crystal without one."""
        keep = self._has(materials)
        if self.spec.train == "frozen":
            train = np.asarray(train, dtype=np.int64)
            fitted = self._fit_frozen(materials, train[keep[train]], seed, tag)
        else:
            fit, val = (np.asarray(p, dtype=np.int64) for p in split)
            fitted = self._fit_heads(materials, (fit[keep[fit]], val[keep[val]]), seed, tag)

        def predict_(m: Materials, pos: np.ndarray) -> Prediction:
            pos = np.asarray(pos, dtype=np.int64)
            ok = self._has(m)[pos]
            if ok.all():
                return fitted.predictor(m, pos)
            part = fitted.predictor(m, pos[ok])
            mean, spread = np.full(len(pos), np.nan), np.full(len(pos), np.nan)
            mean[ok], spread[ok] = part.mean, part.spread
            members = None
            if part.members is not None:
                members = np.full((len(part.members), len(pos)), np.nan)
                members[:, ok] = part.members
            return Prediction(mean, spread, members)

        return Fitted(predict_, fitted.info)

    def _has(self, m: Materials) -> np.ndarray:
        return np.array([i in self.records for i in m.ids], dtype=bool)

    def _fit_frozen(self, m: Materials, train: np.ndarray, seed: int, tag) -> Fitted:
        s = self.profile.methods.chgnet
        krr = KernelRidgeHead(tuple(s.krr_alpha), tuple(s.krr_gamma))
        X, y = self.features(m, train), (m.y - m.pbe_read)[train]
        groups = np.asarray(m.groups)[train]
        params = krr.choose(X, y, groups)
        full = krr.fit(X, y, params)
        rng = np.random.default_rng(seed)
        names = np.unique(groups)
        bagged = []
        for _ in range(self.profile.methods.members):  # bootstrap over formulas: a formula drawn twice weighs twice
            drawn, counts = np.unique(rng.choice(names, size=len(names), replace=True), return_counts=True)
            weight = dict(zip(drawn, counts))
            w = np.array([weight.get(g, 0) for g in groups], dtype=np.float64)
            pick = w > 0
            bagged.append(krr.fit(X[pick], y[pick], params, weight=w[pick]))
        self.fits.append({"method": self.name, **(tag or {}), "seed": seed, **params})

        def predict_(mm: Materials, pos: np.ndarray) -> Prediction:
            Xp, pbe = self.features(mm, pos), mm.pbe_read[pos]
            members = np.vstack([pbe + b.predict(Xp) for b in bagged])
            return Prediction(pbe + full.predict(Xp), members.std(axis=0), None)

        return Fitted(predict_, {"params": params, "model": full, "bagged": bagged})

    def _fit_heads(self, m: Materials, split, seed: int, tag) -> Fitted:
        s, members = self.profile.methods.chgnet, self.profile.methods.members
        fit, val = (np.asarray(p, dtype=np.int64) for p in split)
        records = [self.records.get(i) for i in m.ids]  # None: no record (never in fit or val)
        correction = m.y - m.pbe_read
        lr, epochs = (s.lr, s.epochs) if self.spec.train == "readout" else (s.block_lr, s.block_epochs)
        device = resolve_device(self.profile.device).type
        common = {
            "kind": "chgnet_head",
            "code": code_digest(HEAD_MODULES),
            "data": records_digest([records[k] for k in np.concatenate([fit, val])]),
            "correction": np.round(correction, 10).tolist(),
            "fit": [m.ids[k] for k in fit],
            "val": [m.ids[k] for k in val],
        }
        checkpoints = []
        for k in range(members):
            hs = HeadSettings(self.spec.train, lr, epochs, s.patience, s.batch_size, 100 * seed + k, s.version)
            result = self.cache.fit(
                {**common, "settings": hs.__dict__, "device": device},
                lambda folder, hs=hs: fit_head(records, correction, fit, val, hs, folder, resume=True, device=device),
            )
            self.fits.append(
                {
                    "method": self.name,
                    **(tag or {}),
                    "seed": hs.seed,
                    "member": k,
                    **result.summary(),
                }
            )
            checkpoints.append(result.checkpoint)
        if tag and "repeat" in tag:
            maes = ", ".join(f"{r['inner_val_mae']:.3f}" for r in self.fits[-members:])
            self.echo(f"repeat {tag['repeat']} fold {tag['fold']}  {self.name:>18}  inner val MAE of members {maes} eV")

        def predict_(mm: Materials, pos: np.ndarray) -> Prediction:
            recs, pbe = [self.records[mm.ids[p]] for p in pos], mm.pbe_read[pos]
            preds = np.vstack([pbe + predict_head(c, recs, device) for c in checkpoints])
            return Prediction(preds.mean(axis=0), preds.std(axis=0), preds)

        return Fitted(predict_, {"checkpoints": checkpoints})
