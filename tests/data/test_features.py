"""Atom features (cgcnn.data.features): the default one-hot encoding, JSON formats, lookup, Gaussians."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cgcnn.data.features import (
    DEFAULT_LENGTH,
    FEATURE_BLOCKS,
    AtomFeatures,
    UnsupportedElementError,
    gaussian_expand,
)

ATOM_INIT = Path(__file__).resolve().parents[3] / "shared" / "data" / "cgcnn_reference" / "atom_init.json"

H, HE, O, NA, S, K, FE, ZN, GA, CS, CE, EU, LU = 1, 2, 8, 11, 16, 19, 26, 30, 31, 55, 58, 63, 71  # noqa: E741  (element symbols)


@pytest.fixture(scope="module")
def default():
    return AtomFeatures.default()


def hot(features: AtomFeatures, z: int, block: str) -> int | None:
    """Index of the 1 inside ``block`` for element ``z`` (None for an all-zero block)."""
    part = features.table[z][FEATURE_BLOCKS[block].slice]
    ones = np.flatnonzero(part)
    assert len(ones) <= 1, f"block {block} of Z={z} is not one-hot: {part}"
    assert set(np.unique(part)) <= {0.0, 1.0}
    return int(ones[0]) if len(ones) else None


# -- layout ------------------------------------------------------------------------------


def test_default_has_92_features_in_nine_blocks(default):
    assert default.length == DEFAULT_LENGTH == 92
    assert default.table.dtype == np.float32
    sizes = [b.size for b in FEATURE_BLOCKS.values()]
    assert sizes == [19, 7, 10, 10, 12, 10, 10, 4, 10]
    starts = [b.start for b in FEATURE_BLOCKS.values()]
    assert starts == [0, 19, 26, 36, 46, 58, 68, 78, 82]


def test_default_supports_hydrogen_to_lawrencium(default):
    assert default.atomic_numbers == list(range(1, 104))
    assert default.supports(1) and default.supports(103)
    assert not default.supports(0) and not default.supports(104) and not default.supports(500)
    assert not default.table[0].any()


@pytest.mark.parametrize("z", [H, O, NA, FE, ZN, GA, CS, CE])
def test_well_described_elements_have_one_one_per_block(default, z):
    for name in FEATURE_BLOCKS:
        assert hot(default, z, name) is not None, name
    assert default.table[z].sum() == 9


def test_missing_property_gives_zero_block(default):
    # pymatgen has no Pauling electronegativity for the light noble gases
    assert hot(default, HE, "electronegativity") is None
    assert default.table[HE].sum() == 8
    # nor a covalent radius or molar volume for Lr
    assert hot(default, 103, "covalent_radius") is None
    assert hot(default, 103, "atomic_volume") is None


def test_group_period_and_block_match_the_periodic_table(default):
    assert hot(default, NA, "group") == hot(default, K, "group") == 1
    assert hot(default, O, "group") == hot(default, S, "group") == 16
    assert hot(default, HE, "group") == 18
    assert hot(default, CE, "group") == hot(default, EU, "group") == 0  # f-series slot
    assert hot(default, LU, "group") == 3
    assert hot(default, H, "period") == 0 and hot(default, FE, "period") == 3 and hot(default, CS, "period") == 5
    blocks = {z: "spdf"[hot(default, z, "block")] for z in (H, HE, NA, O, GA, FE, ZN, CE)}
    assert blocks == {H: "s", HE: "s", NA: "s", O: "p", GA: "p", FE: "d", ZN: "d", CE: "f"}


def test_valence_electrons(default):
    # slot k means k + 1 electrons
    expected = {H: 1, HE: 2, O: 6, NA: 1, GA: 3, FE: 8, ZN: 12, CE: 3, EU: 2}
    got = {z: hot(default, z, "valence_electrons") + 1 for z in expected}
    assert got == expected


def test_continuous_bins_follow_the_documented_edges(default):
    # electronegativity: 10 bins of 0.35 from 0.5; O (3.44) -> (3.44 - 0.5) / 0.35 = 8.4 -> bin 8
    assert hot(default, O, "electronegativity") == 8
    # Cs (0.79) -> bin 0; F (3.98) -> bin 9
    assert hot(default, CS, "electronegativity") == 0
    assert hot(default, 9, "electronegativity") == 9
    # covalent radius: 0.25 A bins from 0.25; H 0.31 -> 0, Fe 1.42 -> 4, Cs 2.44 -> 8
    assert [hot(default, z, "covalent_radius") for z in (H, FE, CS)] == [0, 4, 8]
    # electron affinity: 0.5 eV bins from -1; Cl 3.61 -> 9, O 1.46 -> 4
    assert hot(default, 17, "electron_affinity") == 9 and hot(default, O, "electron_affinity") == 4
    # ionisation energy: log10 bins of 0.09 from 0.5; He 24.6 eV -> last bin, Cs 3.89 eV -> 1
    assert hot(default, HE, "first_ionization_energy") == 9
    assert hot(default, CS, "first_ionization_energy") == int((math.log10(3.894) - 0.5) / 0.09) == 1


def test_default_is_deterministic_and_read_only(default):
    again = AtomFeatures.default()
    assert again == default
    assert again.fingerprint() == default.fingerprint()
    assert default.source.startswith("cgcnn-da default v1")
    with pytest.raises(ValueError):
        default.table[1, 0] = 5.0


# -- formats -----------------------------------------------------------------------------


def test_dict_round_trip_is_exact(default):
    d = default.to_dict()
    assert list(d)[:3] == ["1", "2", "3"] and len(d) == 103
    assert all(isinstance(v, list) and len(v) == 92 for v in d.values())
    json.dumps(d)  # JSON-able
    assert AtomFeatures.from_dict(d) == default
    assert AtomFeatures.from_dict(json.loads(json.dumps(d))) == default


def test_json_round_trip_keeps_non_binary_values(tmp_path):
    feats = AtomFeatures.from_dict({"1": [0.1, -2.5, 1e-7], "8": [3.0, 0.0, 1.0 / 3.0]})
    path = feats.to_json(tmp_path / "atom_init.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atom_init.json"]  # no temp left
    back = AtomFeatures.from_json(path)
    assert back == feats
    assert back.length == 3 and back.atomic_numbers == [1, 8]
    assert back.source.startswith("atom_init.json sha256:")
    np.testing.assert_array_equal(back.lookup([8]), np.float32([[3.0, 0.0, 1.0 / 3.0]]))


def test_equality_sees_one_changed_value():
    a = AtomFeatures.from_dict({"1": [1.0, 0.0], "2": [0.0, 1.0]})
    assert a != AtomFeatures.from_dict({"1": [1.0, 0.0], "2": [0.0, 0.5]})
    assert a != AtomFeatures.from_dict({"1": [1.0, 0.0]})
    assert a == AtomFeatures.from_dict({2: [0.0, 1.0], 1: [1.0, 0.0]}, source="other")


def test_from_dict_rejects_ragged_vectors_and_bad_keys():
    with pytest.raises(ValueError, match="same length"):
        AtomFeatures.from_dict({"1": [1.0, 0.0], "2": [1.0]})
    with pytest.raises(ValueError, match="atomic number"):
        AtomFeatures.from_dict({"H": [1.0]})


@pytest.mark.shared_data
@pytest.mark.skipif(not ATOM_INIT.exists(), reason="shared atom_init.json not available")
def test_original_atom_init_json_loads():
    feats = AtomFeatures.from_json(ATOM_INIT)
    assert feats.length == 92
    assert feats.atomic_numbers == list(range(1, 101))
    assert set(np.unique(feats.table)) <= {0.0, 1.0}
    assert feats.lookup([1, 8, 26]).shape == (3, 92)
    assert not feats.supports(101)


# -- lookup ------------------------------------------------------------------------------


def test_lookup_returns_rows_in_order(default):
    out = default.lookup(np.array([8, 1, 8]))
    assert out.shape == (3, 92) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], default.table[8])
    np.testing.assert_array_equal(out[1], default.table[1])
    np.testing.assert_array_equal(out[0], out[2])
    out[0, 0] = 7.0  # a copy, the table is untouched
    assert default.table[8, 0] == 0.0
    assert default.lookup(np.array([], dtype=np.int64)).shape == (0, 92)


def test_unsupported_element_error_names_the_element(default):
    with pytest.raises(UnsupportedElementError, match=r"Og \(Z=118\)"):
        default.lookup([1, 118])
    with pytest.raises(ValueError, match=r"Z=0"):
        default.lookup([0])
    small = AtomFeatures.from_dict({"1": [1.0], "8": [0.0]})
    with pytest.raises(UnsupportedElementError, match=r"Fe \(Z=26\)"):
        small.lookup([8, 26])


# -- Gaussian expansion -------------------------------------------------------------------


def test_gaussian_is_one_at_centre_and_exp_minus_one_a_width_away():
    centers = np.array([0.0, 1.0, 2.0])
    out = gaussian_expand(np.array([1.0, 1.5]), centers, 0.5)
    assert out.shape == (2, 3)
    assert out[0, 1] == 1.0
    assert out[1, 1] == pytest.approx(math.exp(-1))  # 1.5 is one width from 1.0
    assert out[1, 2] == pytest.approx(math.exp(-1))
    assert out[0, 0] == pytest.approx(math.exp(-4))  # two widths


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gaussian_features_far_from_a_centre_are_exactly_zero_never_subnormal(kind, dtype):
    # 0.2 Å width: a centre 2 Å away gives exp(-100), below float32's smallest normal number
    d = np.linspace(0.0, 8.0, 801).astype(dtype)
    centers = np.arange(0.0, 8.01, 0.2)
    out = gaussian_expand(torch.from_numpy(d) if kind == "torch" else d, centers, 0.2)
    out = np.asarray(out)
    tiny = np.finfo(dtype).tiny
    assert out.dtype == dtype
    assert not ((out > 0) & (out < tiny)).any()  # no subnormal value
    exact = np.exp(-((d[:, None].astype(np.float64) - centers) ** 2) / 0.04)
    assert (out[exact < tiny] == 0).all()  # what would be subnormal is 0
    big = exact > 1e-30
    np.testing.assert_allclose(out[big], exact[big], rtol=1e-4 if dtype == "float32" else 1e-12)
    assert out[0, 0] == 1.0  # on a centre


def test_gaussian_numpy_and_torch_agree():
    d = np.linspace(0.5, 8.0, 17)
    centers = np.arange(0.0, 8.01, 0.2)
    ref = gaussian_expand(d, centers, 0.2)
    t = gaussian_expand(torch.tensor(d, dtype=torch.float64), centers, 0.2)
    assert isinstance(t, torch.Tensor) and t.shape == (17, 41)
    np.testing.assert_allclose(t.numpy(), ref, rtol=1e-12)
    t32 = gaussian_expand(torch.tensor(d, dtype=torch.float32), torch.tensor(centers), 0.2)
    assert t32.dtype == torch.float32
    np.testing.assert_allclose(t32.numpy(), ref, atol=1e-6)
    assert gaussian_expand(d.astype(np.float32), centers, 0.2).dtype == np.float32
    with pytest.raises(ValueError):
        gaussian_expand(d, centers, 0.0)
