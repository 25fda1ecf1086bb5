"""Target normaliser: z = (y - mean) / std, fitted on the training split only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Normalizer:
    mean: float
    std: float

    @classmethod
    def fit(cls, y: np.ndarray) -> Normalizer:
        """Fit on training targets (sample std, as the original's ``torch.std``).
        A constant target, or a single one, gets std 1 (no scaling)."""
        y = np.asarray(y, dtype=np.float64)
        if y.size == 0:
            raise ValueError("cannot fit a normaliser on an empty training split")
        std = float(y.std(ddof=1)) if y.size > 1 else 1.0
        return cls(float(y.mean()), std if std > 1e-8 else 1.0)

    def norm(self, y):
        return (y - self.mean) / self.std

    def denorm(self, z):
        return z * self.std + self.mean

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        def as_float(v):
            return float(v.item() if isinstance(v, torch.Tensor) else v)

        return cls(as_float(d["mean"]), as_float(d["std"]))
