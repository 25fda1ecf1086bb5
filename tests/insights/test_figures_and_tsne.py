import numpy as np
import pandas as pd
import pytest

from cgcnn.insights import figures, tsne

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("n, expected", [(1000, 30.0), (91, 30.0), (31, 10.0), (4, 1.0)])
def test_perplexity_is_capped_by_the_set_size(n, expected):
    assert tsne.tsne_perplexity(n) == pytest.approx(expected)


def test_requested_perplexity_is_kept_when_the_set_is_large_enough():
    assert tsne.tsne_perplexity(100, requested=5) == 5
    assert tsne.tsne_perplexity(10, requested=50) == pytest.approx(3.0)


def test_perplexity_needs_four_points():
    with pytest.raises(ValueError, match="at least 4"):
        tsne.tsne_perplexity(3)


def _two_clusters(n=20, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 0.1, size=(n, 5))
    b = rng.normal(10.0, 0.1, size=(n, 5))
    return np.vstack([a, b])


def test_projected_points_land_beside_their_own_cluster():
    x = _two_clusters()
    new = np.vstack([x[3] + 0.01, x[25] + 0.01])  # one point near cluster A, one near cluster B
    result = tsne.fit_tsne(x, new, n_iter=250, early_exaggeration_iter=100, seed=0)
    assert result.fitted.shape == (40, 2) and result.projected.shape == (2, 2)
    centre_a, centre_b = result.fitted[:20].mean(axis=0), result.fitted[20:].mean(axis=0)

    def d(p, c):
        return np.linalg.norm(p - c)

    assert d(result.projected[0], centre_a) < d(result.projected[0], centre_b)
    assert d(result.projected[1], centre_b) < d(result.projected[1], centre_a)
    assert result.perplexity == pytest.approx(13.0)


def test_tsne_is_reproducible_with_a_seed():
    x = _two_clusters(10)
    one = tsne.fit_tsne(x, x[:2], n_iter=50, early_exaggeration_iter=20, seed=3)
    two = tsne.fit_tsne(x, x[:2], n_iter=50, early_exaggeration_iter=20, seed=3)
    assert np.allclose(one.fitted, two.fitted) and np.allclose(one.projected, two.projected)


def test_tsne_rejects_features_of_different_width():
    with pytest.raises(ValueError, match="same width"):
        tsne.fit_tsne(np.zeros((10, 3)), np.zeros((2, 4)))


def test_save_figure_writes_a_png_and_leaves_no_temporary_file(tmp_path):
    fig = figures.histogram_figure({"DS2": pd.DataFrame({"bg_exp": [1.0, 2.0, 2.5]})}, {"bg_exp": "gap"})
    path = figures.save_figure(fig, tmp_path / "figs" / "gaps.png")
    assert path.read_bytes()[:8] == PNG
    assert [p.name for p in path.parent.iterdir()] == ["gaps.png"]


def test_parity_figure_has_one_panel_per_available_column():
    frame = pd.DataFrame({"bg_exp": [1.0, 2.0, 3.0], "a": [1.1, 2.1, np.nan], "b": [0.5, 1.5, 2.5]})
    metrics = pd.DataFrame({"mae": [0.1], "mae_std": [0.02], "r2": [0.9], "n": [2]}, index=["A"])
    fig = figures.parity_figure(frame, "bg_exp", {"A": "a", "B": "b", "missing": "c"}, metrics=metrics)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["A", "B"]
    assert "MAE 0.100 ± 0.020 eV" in visible[0].texts[0].get_text()
    assert visible[1].texts[0].get_text() == "n = 3"


def test_count_table_orders_categories_and_sorts_numbers_as_numbers():
    frames = {
        "DS1": pd.DataFrame({"anion_class": ["oxide", "halide", "oxide"], "n_elements": [2, 10, 3]}),
        "DS2": pd.DataFrame({"anion_class": ["halide"], "n_elements": [2]}),
    }
    classes = figures.count_table(frames, "anion_class")
    assert list(classes.index) == ["oxide", "halide"]  # ANION_CLASSES order
    assert classes.loc["oxide"].tolist() == [2, 0]
    assert list(figures.count_table(frames, "n_elements").index) == ["2", "3", "10"]
    shares = figures.share_table(frames, "anion_class")
    assert shares["DS1"].sum() == pytest.approx(100.0)


def test_tsne_figure_labels_projected_points_and_has_a_panel_per_colouring():
    rng = np.random.default_rng(0)
    tmap = tsne.TsneMap(rng.normal(size=(6, 2)), rng.normal(size=(2, 2)), 1.5)
    fitted = pd.DataFrame(
        {
            "bg_exp": np.linspace(0.5, 3, 6),
            "anion_class": ["oxide"] * 3 + ["halide"] * 3,
            "crystal_system": ["cubic"] * 6,
            "formula": list("ABCDEF"),
        }
    )
    projected = pd.DataFrame(
        {
            "bg_exp": [1.0, 2.0],
            "anion_class": ["oxide", "pnictide"],
            "crystal_system": ["hexagonal", "cubic"],
            "formula": ["GaN", "ZnS"],
        }
    )
    fig = figures.tsne_figure(tmap, fitted, projected)
    panels = [ax for ax in fig.axes if ax.get_title().startswith("coloured by")]
    assert len(panels) == 3
    for ax in panels:
        assert sorted(t.get_text() for t in ax.texts) == ["GaN", "ZnS"]
    legend = [t.get_text() for t in panels[1].get_legend().get_texts()]
    assert legend == ["oxide", "halide", "pnictide"]


def test_history_figure_draws_train_and_validation_curves():
    history = pd.DataFrame({"epoch": [0, 1, 2], "train_mae": [1.0, 0.8, 0.7], "val_mae": [1.1, 0.9, 0.95]})
    fig = figures.history_figure({"M1": history})
    assert len(fig.axes[0].lines) == 2
