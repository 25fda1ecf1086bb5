"""t-SNE maps of crystal features (openTSNE): fitted on one set, other points projected.

t-SNE is *fitted* on one set (DS2) and other points (DS3) are *projected* into that fixed
map with ``TSNEEmbedding.transform``: the DS2 map does not move when DS3 is added, so DS3
materials can be read against their DS2 neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def tsne_perplexity(n: int, requested: float | None = None) -> float:
    """Perplexity for ``n`` fitted points: ``min(requested or 30, (n - 1) / 3)``.

    openTSNE needs about ``3 * perplexity`` neighbours per point, so the perplexity must stay
    below ``(n - 1) / 3``.

    Raises:
        ValueError: for fewer than 4 points (no meaningful map).
    """
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {n}")
    return float(min(requested if requested is not None else 30.0, (n - 1) / 3))


@dataclass
class TsneMap:
    """A t-SNE map fitted on one set with other points projected into it.

    Attributes:
        fitted: [n_fit, 2] coordinates of the fitted points.
        projected: [n_new, 2] coordinates of the projected points.
        perplexity: perplexity used for the fit.
    """

    fitted: np.ndarray
    projected: np.ndarray
    perplexity: float


def fit_tsne(
    fit_features: np.ndarray,
    new_features: np.ndarray | None = None,
    *,
    perplexity: float | None = None,
    n_iter: int = 500,
    early_exaggeration_iter: int = 250,
    standardize: bool = True,
    seed: int = 0,
    n_jobs: int = 1,
) -> TsneMap:
    """Fit a 2-D t-SNE map on ``fit_features`` [n, d] and project ``new_features`` [m, d].

    ``standardize`` scales every feature by the mean and standard deviation of the *fitted*
    set (applied to both sets).  ``perplexity=None`` uses :func:`tsne_perplexity`.
    """
    from openTSNE import TSNE

    x = np.asarray(fit_features, dtype=np.float64)
    y = np.zeros((0, x.shape[1])) if new_features is None else np.asarray(new_features, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or (len(y) and y.shape[1] != x.shape[1]):
        raise ValueError(f"features must be 2-D with the same width, got {x.shape} and {y.shape}")
    if standardize:
        mean, std = x.mean(axis=0), x.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        x, y = (x - mean) / std, (y - mean) / std
    perp = tsne_perplexity(len(x), perplexity)
    tsne = TSNE(
        n_components=2,
        perplexity=perp,
        n_iter=n_iter,
        early_exaggeration_iter=early_exaggeration_iter,
        random_state=seed,
        n_jobs=n_jobs,
        neighbors="exact" if len(x) < 1000 else "auto",
        verbose=False,
    )
    embedding = tsne.fit(x)
    if len(y):
        k = int(min(25, len(x) - 1))
        projected = np.asarray(embedding.transform(y, perplexity=min(5.0, k / 3), k=k))
    else:
        projected = np.zeros((0, 2))
    return TsneMap(np.asarray(embedding), projected, perp)
