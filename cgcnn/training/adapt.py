"""Domain adaptation (fine-tuning a base model on a new dataset) and the from-scratch control.

The study (Masood et al., Cell Rep. Phys. Sci. 2023): a base model M1 trained on many
PBE-labelled crystals is fine-tuned on a few hundred experimental gaps (M2), optionally
with some layers frozen (:mod:`cgcnn.training.freeze`).  The control is the same architecture
trained on the same split from random initialisation, so any gain of M2 over it is the
knowledge transferred from M1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cgcnn.config import AdaptConfig, ModelConfig, TrainConfig
from cgcnn.data.dataset import CrystalDataset
from cgcnn.training.checkpoint import Loaded, load_checkpoint
from cgcnn.training.fit import FitResult, fit
from cgcnn.training.freeze import apply_freeze

__all__ = ["adapt", "apply_freeze", "train_control"]


def adapt(
    base: str | Path | Loaded,
    dataset: CrystalDataset,
    cfg: AdaptConfig,
    out_dir: str | Path,
    *,
    splits: tuple[Sequence[int], ...] | None = None,
    resume: bool = False,
    progress: bool = True,
    model_config: ModelConfig | None = None,
) -> FitResult:
    """Fine-tune ``base`` on ``dataset`` with ``cfg.freeze`` and ``cfg.normalizer``.

    ``normalizer="keep"`` keeps the base model's target normaliser (its output scale);
    ``"refit"`` fits a new one on the adaptation training split.  ``model_config``: a
    multi-fidelity / PBE-aware variant of the base architecture (new layers start at zero).
    """
    loaded = base if isinstance(base, Loaded) else load_checkpoint(base)
    normalizer = loaded.normalizer if cfg.normalizer == "keep" else None
    meta = {
        "role": "adapted",
        "base_checkpoint": str(base) if not isinstance(base, Loaded) else None,
        "adapt": cfg.to_dict(),
    }
    return fit(
        dataset,
        cfg.train,
        out_dir,
        init=loaded,
        model_config=model_config,
        splits=splits,
        freeze=cfg.freeze,
        normalizer=normalizer,
        resume=resume,
        progress=progress,
        meta=meta,
    )


def train_control(
    dataset: CrystalDataset,
    train_cfg: TrainConfig,
    out_dir: str | Path,
    *,
    model_config: ModelConfig,
    splits: tuple[Sequence[int], ...] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> FitResult:
    """The same architecture trained from random initialisation on the same split."""
    return fit(
        dataset,
        train_cfg,
        out_dir,
        model_config=model_config,
        splits=splits,
        resume=resume,
        progress=progress,
        meta={"role": "control"},
    )
