"""Per-crystal inputs beside the graph, for multi-fidelity and PBE-aware models.

A model whose :class:`~cgcnn.config.ModelConfig` sets ``fidelities``, ``pbe_input`` or
``composition`` reads, for every crystal (attached with
:meth:`cgcnn.data.dataset.CrystalDataset.with_inputs`, gathered into ``Batch.inputs``):

* ``fidelity`` — the index of the label's fidelity in ``ModelConfig.fidelities``
  (e.g. 0 = PBE, 1 = experiment); the model predicts the gap *at* that fidelity;
* ``pbe`` — the PBE gap in eV, NaN when unknown (the model then sees "unknown");
* ``composition`` — Magpie element-property statistics of the crystal's composition
  (matminer's ``ElementProperty.from_preset("magpie")``, 132 numbers), computed from the
  atoms of the graph itself, so no formula has to be supplied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cgcnn.config import ModelConfig
from cgcnn.data.magpie import of_graphs
from cgcnn.errors import DatasetError

INPUT_DTYPES = {"fidelity": np.int64, "pbe": np.float32, "composition": np.float32}
MAGPIE_DIM = 132


def required_inputs(config: ModelConfig) -> list[str]:
    """The per-crystal inputs a model with ``config`` reads."""
    need = []
    if config.fidelities:
        need.append("fidelity")
    if config.pbe_input:
        need.append("pbe")
    if config.composition == "magpie":
        need.append("composition")
    return need


def composition_features(graphs) -> np.ndarray:
    """Magpie features of every crystal of ``graphs`` (shape [n, 132]), from its atoms."""
    return of_graphs(graphs).astype(np.float32)


def fidelity_index(config: ModelConfig, name: str) -> int:
    """Position of fidelity ``name`` in the model's list; a clear error otherwise."""
    if name not in config.fidelities:
        raise DatasetError(f"the model knows the fidelities {config.fidelities}, not {name!r}")
    return config.fidelities.index(name)


def pbe_column(ids: Sequence[str], pbe: Mapping[str, float]) -> np.ndarray:
    """PBE gaps (eV) of ``ids`` from a mapping, NaN where unknown."""
    return np.array([float(pbe.get(m, np.nan)) for m in ids], dtype=np.float32)


def attach_inputs(
    dataset, config: ModelConfig, *, fidelity: str | None = None, pbe: Mapping[str, float] | np.ndarray | None = None
):
    """Attach what a model with ``config`` reads to ``dataset`` (in place; returns it):
    every crystal at ``fidelity`` (default: the model's last), the PBE gaps of ``pbe``
    (a mapping by id or an array; unknown = NaN), and composition features."""
    arrays: dict[str, np.ndarray] = {}
    if config.fidelities:
        arrays["fidelity"] = np.full(
            len(dataset), fidelity_index(config, fidelity or config.default_fidelity), np.int64
        )
    if config.pbe_input:
        if pbe is None:
            arrays["pbe"] = np.full(len(dataset), np.nan, np.float32)
        elif isinstance(pbe, Mapping):
            arrays["pbe"] = pbe_column(dataset.ids, pbe)
        else:
            arrays["pbe"] = np.asarray(pbe, dtype=np.float32)
    if config.composition == "magpie" and "composition" not in dataset.inputs:
        arrays["composition"] = composition_features(dataset.graphs)
    return dataset.with_inputs(**arrays)


def check_inputs(dataset, config: ModelConfig) -> None:
    """Refuse a dataset that lacks an input the model reads."""
    missing = [n for n in required_inputs(config) if n not in dataset.inputs]
    if missing:
        raise DatasetError(
            f"the model reads per-crystal inputs {missing} that the dataset does not carry; "
            "attach them with cgcnn.data.descriptors.attach_inputs(dataset, model_config, ...)"
        )
    if "fidelity" in dataset.inputs and len(dataset):
        bad = dataset.inputs["fidelity"][
            (dataset.inputs["fidelity"] < 0) | (dataset.inputs["fidelity"] >= len(config.fidelities))
        ]
        if len(bad):
            raise DatasetError(f"fidelity index {int(bad[0])} is outside the model's fidelities {config.fidelities}")


MAX_PBE_GAP_EV = 30.0  # a larger "PBE gap" is a unit or typing mistake (solid He, the widest, is ~17 eV)


def read_pbe_gaps(path: str) -> dict[str, float]:
    """Known PBE gaps from a CSV with columns ``material_id,pbe_gap_ev``; a bad row is an
    error naming it."""
    import math

    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise DatasetError(f"--pbe-gaps {path}: no such file") from None
    except pd.errors.EmptyDataError:
        raise DatasetError(
            f"--pbe-gaps {path}: the file is empty; give a CSV with columns material_id,pbe_gap_ev"
        ) from None
    except (UnicodeDecodeError, pd.errors.ParserError) as exc:
        why = type(exc).__name__ if isinstance(exc, UnicodeDecodeError) else " ".join(str(exc).split())
        raise DatasetError(
            f"--pbe-gaps {path}: not a readable UTF-8 CSV ({why}); give a CSV with columns material_id,pbe_gap_ev"
        ) from None
    missing = [c for c in ("material_id", "pbe_gap_ev") if c not in df.columns]
    if missing:
        raise DatasetError(
            f"--pbe-gaps {path}: no column {missing[0]!r} (columns: {list(df.columns)}); give material_id,pbe_gap_ev"
        )
    out: dict[str, float] = {}
    for line, (m, v) in enumerate(zip(df["material_id"].str.strip(), df["pbe_gap_ev"].str.strip()), start=2):
        try:
            x = float(v)
        except ValueError:
            x = math.nan
        if not math.isfinite(x) or x < 0:
            raise DatasetError(
                f"--pbe-gaps {path}, line {line} ({m}): PBE gap {v!r} is not a number >= 0; fix or remove the row"
            )
        if x > MAX_PBE_GAP_EV:
            raise DatasetError(
                f"--pbe-gaps {path}, line {line} ({m}): PBE gap {v} eV is above {MAX_PBE_GAP_EV:g} eV, more than any "
                "crystal's (the largest in the Materials Project is about 17 eV); give it in eV"
            )
        if m in out:
            raise DatasetError(
                f"--pbe-gaps {path}, line {line}: material {m} is listed twice; give one PBE gap per material"
            )
        out[m] = x
    return out
