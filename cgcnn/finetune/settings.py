"""The settings of ``cgcnn finetune`` (validated: an unknown key is an error, never ignored).

Every setting is written into the model folder's manifest, so a model says how it was made.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cgcnn.config import StrictModel
from cgcnn.training.freeze import POLICIES

__all__ = ["FinetuneSettings", "folds_for"]


class FinetuneSettings(StrictModel):
    """How the lab's data are cross-validated and the recipes fitted.

        ``folds``: outer folds grouped by reduced formula (None: :func:`folds_for` the table's
        size); ``min_materials``: fewer usable materials are refused.  The fine-tuned members:
        every freeze policy of ``policies`` is fitted on a fold's inner fitting part, and the one
        with the lowest inner validation MAE of the first member is chosen, and every member
    fine-tuned under it predicts the fold.  ``tie_ev``:
        recipes whose CV MAE lies within this of the lowest count as tied, and the simplest of them
        is selected (zero-shot, then recalibration, residual trees, fine-tuning, the average);
    ``min_gain_ev``: an adaptation ships only when it lowers the CV MAE by at least this (and its
    paired interval against zero-shot lies below 0).
    ``threads``: torch's intra-op threads (set for the whole process).  The fits are small: on 2
    cores shared with other work, one thread ran a fine-tuning epoch of 40 crystals in 0.16 s and
    two threads in 7 s (they wait for each other), so the default is 1.
    """

    folds: int | None = Field(None, ge=2, le=10)
    repeats: int = Field(1, ge=1, le=5)
    seed: int = 0
    min_materials: int = Field(20, ge=10)
    inner_val_fraction: float = Field(0.2, gt=0, lt=0.5)
    policies: list[Literal[POLICIES]] = Field(default_factory=lambda: ["head", "convs", "none"], min_length=1)
    epochs: int = Field(40, ge=1)
    patience: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(16, ge=1)
    trees_grid: dict[Literal["learning_rate", "max_leaf_nodes", "min_samples_leaf"], list[float | int]] = Field(
        default_factory=lambda: {"learning_rate": [0.05], "max_leaf_nodes": [7, 15], "min_samples_leaf": [10]}
    )
    trees_max_iter: int = Field(100, ge=10)
    level: float = Field(0.9, gt=0, lt=1)
    n_boot: int = Field(2000, ge=100)
    tie_ev: float = Field(0.001, ge=0)
    min_gain_ev: float = Field(0.01, ge=0)
    min_class_scores: int = Field(30, ge=0)
    device: str = "cpu"
    threads: int = Field(1, ge=1, description="torch threads for the fits and predictions")
    recipes: list[Literal["recalibrated", "finetuned", "residual_trees", "average"]] = Field(
        default_factory=lambda: ["recalibrated", "finetuned", "residual_trees", "average"]
    )


def folds_for(n_materials: int, n_formulas: int, wanted: int | None = None) -> int:
    """Outer folds for a table of ``n_materials``: 5 from 50 materials, 4 from 40, else 3 —
    each test fold keeps about ten materials — and never more than the distinct formulas."""
    k = wanted if wanted is not None else 5 if n_materials >= 50 else 4 if n_materials >= 40 else 3
    return max(2, min(k, n_formulas))
