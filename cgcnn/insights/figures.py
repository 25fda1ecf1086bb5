"""The study's figures and count tables (matplotlib, saved as PNG atomically).

Figures are built on ``matplotlib.figure.Figure`` (no pyplot state), so library code never
leaks open figures; a notebook shows one by leaving it as the cell's last expression.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cgcnn.data.material_classes import ANION_CLASSES, CRYSTAL_SYSTEMS
from cgcnn.fileio import atomic_path
from cgcnn.insights.tsne import TsneMap

# Qualitative colours for categories (tab10 + tab20 extras), in a fixed order.
_QUALITATIVE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
)


# --------------------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------------------
def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 150) -> Path:
    """Write ``fig`` as PNG atomically (temporary file in the target folder, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path


# --------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------
def _categories(values: pd.Series, order: Sequence[str] | None) -> list[str]:
    present = [str(v) for v in pd.unique(values.astype(str))]
    if order is None:
        return sorted(present)
    ordered = [c for c in order if c in present]
    return ordered + sorted(c for c in present if c not in ordered)


def category_colours(categories: Sequence[str]) -> dict[str, str]:
    """A fixed colour per category (cycling through 12 qualitative colours)."""
    return {c: _QUALITATIVE[i % len(_QUALITATIVE)] for i, c in enumerate(categories)}


def _colour_order(column: str) -> Sequence[str] | None:
    if column.startswith("anion_class"):
        return ANION_CLASSES
    if column.startswith("crystal_system"):
        return (*CRYSTAL_SYSTEMS, "unknown")
    return None


def scatter_map(
    ax,
    fitted: np.ndarray,
    fitted_values: pd.Series,
    projected: np.ndarray | None = None,
    projected_values: pd.Series | None = None,
    *,
    labels: Sequence[str] | None = None,
    title: str = "",
    fitted_name: str = "DS2",
    projected_name: str = "DS3",
    colour_label: str = "",
    vmin: float | None = None,
    vmax: float | None = None,
):
    """Scatter a 2-D map on ``ax``: fitted points small, projected points large with a black edge.

    Numeric values use a continuous colour scale (viridis, shared by both sets); text or
    categorical values get one colour per category (legend).  ``labels`` annotate the
    projected points (e.g. DS3 formulas).
    """
    projected = np.zeros((0, 2)) if projected is None else projected
    proj_vals = pd.Series([], dtype=object) if projected_values is None else projected_values
    numeric = pd.api.types.is_numeric_dtype(fitted_values) and not isinstance(fitted_values.dtype, pd.CategoricalDtype)
    if numeric:
        all_vals = pd.concat([pd.Series(fitted_values, dtype=float), pd.Series(proj_vals, dtype=float)])
        lo = float(np.nanmin(all_vals)) if vmin is None else vmin
        hi = float(np.nanmax(all_vals)) if vmax is None else vmax
        sc = ax.scatter(
            fitted[:, 0],
            fitted[:, 1],
            c=np.asarray(fitted_values, float),
            cmap="viridis",
            vmin=lo,
            vmax=hi,
            s=12,
            alpha=0.75,
            linewidths=0,
            label=fitted_name,
        )
        if len(projected):
            ax.scatter(
                projected[:, 0],
                projected[:, 1],
                c=np.asarray(proj_vals, float),
                cmap="viridis",
                vmin=lo,
                vmax=hi,
                s=70,
                marker="D",
                edgecolors="black",
                linewidths=0.8,
                label=projected_name,
            )
        cbar = ax.figure.colorbar(sc, ax=ax, fraction=0.046, pad=0.02)
        cbar.set_label(colour_label)
        # marker key: small dots = fitted set, diamonds = projected set
        ax.scatter([], [], s=12, color="grey", label=f"{fitted_name} (fitted)")
        if len(projected):
            ax.scatter(
                [], [], s=70, marker="D", color="grey", edgecolors="black", label=f"{projected_name} (projected)"
            )
        ax.legend(fontsize=7, loc="best", handles=ax.collections[-2 if len(projected) else -1 :])
    else:
        fit_s = pd.Series(fitted_values).astype(str).reset_index(drop=True)
        proj_s = pd.Series(proj_vals).astype(str).reset_index(drop=True)
        cats = _categories(pd.concat([fit_s, proj_s]), _colour_order(str(getattr(fitted_values, "name", "") or "")))
        colours = category_colours(cats)
        for cat in cats:
            m = (fit_s == cat).to_numpy()
            if m.any():
                ax.scatter(fitted[m, 0], fitted[m, 1], color=colours[cat], s=12, alpha=0.75, linewidths=0, label=cat)
            mp = (proj_s == cat).to_numpy()
            if mp.any():
                ax.scatter(
                    projected[mp, 0],
                    projected[mp, 1],
                    color=colours[cat],
                    s=70,
                    marker="D",
                    edgecolors="black",
                    linewidths=0.8,
                    label=None if m.any() else cat,
                )
        ax.legend(fontsize=7, markerscale=1.2, loc="best", frameon=True, title=colour_label or None, title_fontsize=7)
    if labels is not None:
        for (x, y), text in zip(projected, labels):
            ax.annotate(str(text), (x, y), xytext=(3, 3), textcoords="offset points", fontsize=7)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def tsne_figure(
    tsne: TsneMap,
    fitted_df: pd.DataFrame,
    projected_df: pd.DataFrame,
    *,
    colour_by: Sequence[tuple[str, str]] = (
        ("bg_exp", "experimental gap (eV)"),
        ("anion_class", "anion class"),
        ("crystal_system", "crystal system"),
    ),
    label_column: str | None = "formula",
    title: str = "",
) -> Figure:
    """One panel per ``(column, label)`` of ``colour_by``; projected points labelled by ``label_column``.

    Rows of ``fitted_df`` / ``projected_df`` follow the rows of ``tsne.fitted`` / ``tsne.projected``.
    """
    n = len(colour_by)
    fig = Figure(figsize=(5.2 * n, 4.8), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    labels = None if label_column is None else list(projected_df[label_column])
    for ax, (column, label) in zip(axes, colour_by):
        scatter_map(
            ax,
            tsne.fitted,
            fitted_df[column].reset_index(drop=True),
            tsne.projected,
            projected_df[column].reset_index(drop=True),
            labels=labels,
            title=f"coloured by {label}",
            colour_label=label,
        )
    if title:
        fig.suptitle(title)
    return fig


def parity_figure(
    frame: pd.DataFrame,
    truth: str,
    predictions: Mapping[str, str],
    *,
    metrics: pd.DataFrame | None = None,
    ncols: int = 4,
    label_column: str | None = None,
    title: str = "",
) -> Figure:
    """Parity plots of each prediction column against ``truth`` (one panel per model).

    Args:
        frame: one row per material.
        truth: column of reference values (experimental gap).
        predictions: panel title -> column of ``frame``.
        metrics: optional table indexed by panel title with ``mae`` (and ``mae_std``, ``r2``),
            shown in each panel.
        label_column: annotate points with this column (e.g. formulas) when given.
    """
    names = [name for name, col in predictions.items() if col in frame.columns]
    n = max(len(names), 1)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(3.3 * ncols, 3.3 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    y = pd.to_numeric(frame[truth], errors="coerce").to_numpy(float)
    finite = [v for v in y if np.isfinite(v)]
    values = [pd.to_numeric(frame[predictions[nm]], errors="coerce").to_numpy(float) for nm in names]
    everything = (
        np.concatenate([np.asarray(finite)] + [v[np.isfinite(v)] for v in values]) if names else np.asarray(finite)
    )
    lo = float(min(0.0, np.nanmin(everything))) if everything.size else 0.0
    hi = float(np.nanmax(everything)) * 1.05 if everything.size else 1.0
    for ax, name, pred in zip(axes, names, values):
        ok = np.isfinite(y) & np.isfinite(pred)
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax.scatter(y[ok], pred[ok], s=18, alpha=0.8, edgecolors="black", linewidths=0.3)
        if label_column is not None:
            for xv, yv, text in zip(y[ok], pred[ok], frame.loc[ok, label_column]):
                ax.annotate(str(text), (xv, yv), xytext=(2, 2), textcoords="offset points", fontsize=5)
        text = f"n = {int(ok.sum())}"
        if metrics is not None and name in metrics.index:
            row = metrics.loc[name]
            mae = f"MAE {row['mae']:.3f}"
            if "mae_std" in row and pd.notna(row["mae_std"]):
                mae += f" ± {row['mae_std']:.3f}"
            text = f"{mae} eV\nR² {row['r2']:.2f}, n = {int(row['n'])}"
        ax.text(
            0.04,
            0.96,
            text,
            transform=ax.transAxes,
            va="top",
            fontsize=7,
            bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8, "lw": 0},
        )
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"{truth} (eV)", fontsize=8)
        ax.set_ylabel("predicted (eV)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return fig


def histogram_figure(
    frames: Mapping[str, pd.DataFrame],
    columns: Mapping[str, str],
    *,
    bins: int = 40,
    title: str = "",
) -> Figure:
    """Histograms (density) of ``columns`` (column -> axis label), one panel per column,
    one colour per dataset in ``frames``; datasets without the column are skipped."""
    n = len(columns)
    fig = Figure(figsize=(4.6 * n, 3.6), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    colours = category_colours(list(frames))
    for ax, (column, label) in zip(axes, columns.items()):
        data = {
            name: pd.to_numeric(df[column], errors="coerce").dropna() for name, df in frames.items() if column in df
        }
        data = {k: v for k, v in data.items() if len(v)}
        if data:
            lo = min(float(v.min()) for v in data.values())
            hi = max(float(v.max()) for v in data.values())
            edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
            for name, values in data.items():
                ax.hist(
                    values,
                    bins=edges,
                    density=True,
                    histtype="stepfilled",
                    alpha=0.35,
                    color=colours[name],
                    label=f"{name} (n = {len(values)})",
                )
                ax.hist(values, bins=edges, density=True, histtype="step", color=colours[name])
            ax.legend(fontsize=7)
        ax.set_xlabel(label)
        ax.set_ylabel("density")
    if title:
        fig.suptitle(title)
    return fig


def _sort_key(value: str):
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def count_table(
    frames: Mapping[str, pd.DataFrame], column: str, order: Sequence | None = None, *, percent: bool = False
) -> pd.DataFrame:
    """Materials of each dataset (columns) in every category of ``column`` (rows).

    Rows follow ``order`` (categories not in it come last); numeric categories such as the
    number of elements are sorted as numbers.  ``percent=True`` gives shares of each dataset (%).
    """
    cols = {}
    for name, df in frames.items():
        if column in df:
            cols[name] = df[column].astype(str).value_counts(normalize=percent) * (100 if percent else 1)
    table = pd.DataFrame(cols).fillna(0)
    if not percent:
        table = table.astype(int)
    order = [str(o) for o in (order if order is not None else _colour_order(column) or [])]
    rest = sorted((c for c in table.index if c not in order), key=_sort_key)
    table = table.reindex([o for o in order if o in table.index] + rest)
    table.index.name = column
    return table


def share_table(frames: Mapping[str, pd.DataFrame], column: str, order: Sequence | None = None) -> pd.DataFrame:
    """Share (%) of each dataset in every category of ``column`` (see :func:`count_table`)."""
    return count_table(frames, column, order, percent=True)


def bar_figure(frames: Mapping[str, pd.DataFrame], columns: Mapping[str, str], *, title: str = "") -> Figure:
    """Grouped bars: share (%) of each category per dataset, one panel per column."""
    n = len(columns)
    fig = Figure(figsize=(5.4 * n, 3.8), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    colours = category_colours(list(frames))
    for ax, (column, label) in zip(axes, columns.items()):
        table = share_table(frames, column, _colour_order(column))
        width = 0.8 / max(len(table.columns), 1)
        x = np.arange(len(table.index))
        for k, name in enumerate(table.columns):
            ax.bar(
                x + (k - (len(table.columns) - 1) / 2) * width,
                table[name],
                width=width,
                color=colours[name],
                label=name,
            )
        ax.set_xticks(x)
        ax.set_xticklabels(table.index, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("share of dataset (%)")
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def history_figure(histories: Mapping[str, pd.DataFrame], *, title: str = "") -> Figure:
    """Training (dashed) and validation (solid) MAE per epoch for each named history."""
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.subplots()
    colours = category_colours(list(histories))
    for name, h in histories.items():
        if len(h) == 0:
            continue
        ax.plot(h["epoch"], h["train_mae"], ls="--", color=colours[name], lw=1)
        ax.plot(h["epoch"], h["val_mae"], ls="-", color=colours[name], lw=1.5, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MAE (eV): validation solid, training dashed")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    return fig
