"""The study's one fit cache: every network fit stored once, under the hash of what determines it.

A fit — M1 on DS1, one freeze policy at one learning rate on one fold, one member of an
ensemble candidate, a final model — is determined by its settings, the data it trains and
validates on (graphs, labels, per-crystal inputs, the positions of each split), the weights it
starts from, the device, and the code that trains it (:data:`FIT_MODULES` and what they
import: network, training, data; never tables, labels for reading, reports or the ETL).  Its
key is the sha256 of those (:func:`fit_key`), and it lives in ``<cache>/fits/<key[:2]>/<key>/``:
``best.pt``, ``history.csv``, ``splits.json``, ``run.json`` and ``fit.json`` (what the fit
reported: best validation MAE, best epoch, epochs run, seconds).  Asking again returns it.

A fit runs in ``<key>.partial/`` with ``resume=True``: a process killed half-way leaves its
``last.pt`` (written every epoch), and the next request resumes at the next epoch and ends
with the weights an uninterrupted fit would have had (:func:`cgcnn.training.fit.fit`).  The
finished folder is renamed into place, so a key's folder is either complete or absent.

The cache is shared by the run folders of one output root (``<output>/.cache``, or a folder
given with the runner's ``--cache``; ``config.json`` records it), so a new run folder whose
settings leave a fit unchanged reads that fit back — M1 included.

Example:
    >>> cache = FitCache.of_run(run_dir)
    >>> fit = cache.fit({"kind": "adapt", ...}, lambda out: adapt(base, data, cfg, out, resume=True))
    >>> fit.checkpoint  # <cache>/fits/ab/ab12…/best.pt
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from cgcnn.fileio import write_json
from cgcnn.lock import LOCK_NAME, RunLock

__all__ = ["FIT_MODULES", "CachedFit", "FitCache", "code_digest", "dataset_digest", "fit_key", "loaded_digest"]

# The code a network fit runs (with everything these import): a change anywhere else —
# tables, labels, reports, the ETL — leaves every cached fit valid.
FIT_MODULES = ("cgcnn.training.adapt", "cgcnn.training.fit")
_KEEP_OUT = ("last.pt", LOCK_NAME)  # a finished fit's resume state and training lock are not kept
FORMAT = 1


@cache
def code_digest(modules: tuple[str, ...] = FIT_MODULES) -> str:
    """sha256 over the source files of ``modules`` and every package module they import."""
    from cgcnn.provenance import code_files, modules_used

    return _sha256_json(code_files(modules_used(set(modules))))


def _sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _update(h, arr) -> None:
    a = np.ascontiguousarray(arr)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())


_DIGESTS: dict[int, tuple[Any, str]] = {}


def dataset_digest(dataset) -> str:
    """sha256 of a :class:`~cgcnn.data.dataset.CrystalDataset`'s content: ids, labels, per-crystal
    inputs, graphs (atoms, edges, distances, graph settings) and atom features.  Remembered per
    dataset object (datasets are not changed after their inputs are attached)."""
    known = _DIGESTS.get(id(dataset))
    if known is not None and known[0] is dataset:
        return known[1]
    h = hashlib.sha256()
    h.update(json.dumps(list(dataset.ids)).encode())
    if dataset.y is not None:
        _update(h, dataset.y)
    for name in sorted(dataset.inputs):
        h.update(name.encode())
        _update(h, dataset.inputs[name])
    g = dataset.graphs
    for arr in (g.atomic_numbers, g.node_ptr, g.edge_index, g.distances, g.edge_ptr):
        _update(h, arr)
    h.update(json.dumps(dataset.config.to_dict(), sort_keys=True).encode())
    _update(h, dataset.features.table)
    digest = h.hexdigest()
    _DIGESTS[id(dataset)] = (dataset, digest)
    return digest


def loaded_digest(loaded) -> str:
    """sha256 of a loaded checkpoint's weights, normaliser, architecture and features (what a
    fine-tuning starts from)."""
    h = hashlib.sha256()
    for name, tensor in sorted(loaded.model.state_dict().items()):
        h.update(name.encode())
        _update(h, tensor.detach().cpu().numpy())
    h.update(json.dumps(loaded.model_config.model_dump(), sort_keys=True).encode())
    h.update(f"{loaded.normalizer.mean!r}/{loaded.normalizer.std!r}".encode())
    _update(h, loaded.features.table)
    return h.hexdigest()


def fit_key(spec: dict) -> str:
    """The cache key of a fit: ``spec`` (settings, data digests, split ids, start weights) with
    the digest of the fitting code and the cache format."""
    return _sha256_json({"format": FORMAT, "code": code_digest(), **spec})


@dataclass(frozen=True)
class CachedFit:
    """A finished fit in the cache: its folder and what it reported (``fit.json``)."""

    folder: Path
    record: dict

    @property
    def checkpoint(self) -> Path:
        return self.folder / "best.pt"

    @property
    def best_val_mae(self) -> float:
        return float(self.record["best_val_mae"])

    @property
    def best_epoch(self) -> int:
        return int(self.record["best_epoch"])

    @property
    def epochs_run(self) -> int:
        return int(self.record["epochs_run"])

    @property
    def seconds(self) -> float:
        return float(self.record["seconds"])

    def summary(self) -> dict:
        """What the fits tables record of this fit."""
        return {
            "inner_val_mae": self.best_val_mae,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "seconds": self.seconds,
        }

    def history(self):
        import pandas as pd

        return pd.read_csv(self.folder / "history.csv")

    def copy_to(self, out: str | os.PathLike) -> Path:
        """Copy the fit's files into ``out`` (e.g. a run folder's ``models/m1``) and return the
        copy's ``best.pt``.  The copies are byte-identical to the cached files, so a stage that
        reads a fit back writes the same outputs as the stage that fitted it."""
        out = Path(out)
        if out.exists():
            shutil.rmtree(out)
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(self.folder, tmp)
        os.replace(tmp, out)
        return out / "best.pt"


class FitCache:
    """Content-addressed store of fits (see the module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @classmethod
    def of_run(cls, run_dir: str | os.PathLike) -> FitCache:
        """The cache of a run folder: the one its ``config.json`` names (``"cache"``, relative
        to the run folder or absolute), else ``.cache`` beside the run folder (shared by the
        run folders of one output root)."""
        run = Path(run_dir)
        try:
            named = json.loads((run / "config.json").read_text()).get("cache")
        except (OSError, ValueError):
            named = None
        root = Path(named) if named else Path("..") / ".cache"
        return cls(root if root.is_absolute() else run / root)

    def folder(self, key: str) -> Path:
        return self.root / "fits" / key[:2] / key

    def get(self, key: str) -> CachedFit | None:
        folder = self.folder(key)
        try:
            record = json.loads((folder / "fit.json").read_text())
        except (OSError, ValueError):
            return None
        return CachedFit(folder, record)

    def fit(self, spec: dict, work: Callable[[Path], Any]) -> CachedFit:
        """The fit ``spec`` describes, from the cache or by running ``work(folder)``.

        ``work`` trains into ``folder`` (resuming from its ``last.pt`` when one is there) and
        returns a :class:`~cgcnn.training.fit.FitResult`.  ``spec`` must hold everything the
        fit depends on except the code (added by :func:`fit_key`)."""
        key = fit_key(spec)
        done = self.get(key)
        if done is not None:
            return done
        final = self.folder(key)
        partial = final.with_name(key + ".partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        with RunLock(final.with_name(key + ".lock"), what="cached fit"):
            done = self.get(key)  # another process may have finished it meanwhile
            if done is not None:
                return done
            before = self.seconds_spent(partial)  # an interrupted fit's epochs, when it resumes
            t0 = time.perf_counter()
            result = work(partial)
            seconds = before + time.perf_counter() - t0
            record = {
                "best_val_mae": float(result.best_val_mae),
                "best_epoch": int(result.best_epoch),
                "epochs_run": len(result.history),
                "seconds": round(seconds, 2),
            }
            for name in _KEEP_OUT:
                (partial / name).unlink(missing_ok=True)
            write_json(partial / "spec.json", spec)
            write_json(partial / "fit.json", record)  # last: marks the fit complete
            os.replace(partial, final)
        shutil.rmtree(final.with_name(key + ".lock"), ignore_errors=True)  # the fit is complete: no lock needed
        return CachedFit(final, record)

    @staticmethod
    def seconds_spent(partial: Path) -> float:
        """Seconds already spent on an interrupted fit (its ``history.csv``), so that a resumed
        fit reports the time of the whole fit."""
        history = partial / "history.csv"
        if not history.is_file():
            return 0.0
        import pandas as pd

        try:
            h = pd.read_csv(history)
        except (OSError, ValueError):
            return 0.0
        return float(h["seconds"].sum()) if "seconds" in h else 0.0
