"""Shared fixtures for the core tests: crystals built in code, named by formula, and a tiny
labelled dataset.

Every structure here is a textbook prototype with a hand-checkable neighbour shell, so the
graph tests can assert exact counts and distances.  The tiny dataset strains six binary
prototypes (two atoms per primitive cell) to 24 crystals; its labels are a made-up smooth
function of the strain (``gap = gap0 * (2 - s)``), learnable but not physical.  Nothing
here reads or writes outside ``tmp_path`` except the read-only reference files in
``../shared/data`` (tests using them are marked ``shared_data`` and skip when it is absent).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.core import Structure

from cgcnn.config import GraphConfig, ModelConfig, TrainConfig
from cgcnn.data.building import build_graphs
from cgcnn.data.dataset import CrystalDataset
from cgcnn.data.features import AtomFeatures
from cgcnn.data.graphset import GraphSet

# The models here are tiny: one intra-op thread is fastest, and on a busy machine extra
# threads only wait for each other (a 3-epoch fit takes seconds instead of ~0.1 s).
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REFERENCE = SHARED_DATA / "cgcnn_reference"


# --------------------------------------------------------------------------- crystals
# The textbook cells live in tests/fixtures/crystals.py (one place for every test and the
# fixture generator); it is importable from every test folder as ``crystals``.
sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from crystals import caesium_chloride, conventional, rocksalt, zincblende  # noqa: E402
from crystals import h2_in_box as _h2_in_box  # noqa: E402


@pytest.fixture(scope="session")
def cscl() -> Structure:
    """CsCl, Pm-3m, a = 4.12 Å: Cs at the origin, Cl at the body centre (2 atoms).
    8 nearest neighbours at a√3/2 = 3.568 Å, then 6 at a = 4.12 Å."""
    return caesium_chloride(4.12)


@pytest.fixture(scope="session")
def nacl() -> Structure:
    """Rock salt NaCl, Fm-3m conventional cell, a = 5.64 Å (8 atoms).
    6 nearest at a/2 = 2.82 Å, then 12 at a/√2 = 3.988 Å."""
    return conventional("rocksalt", ("Na", "Cl"), 5.64)


@pytest.fixture(scope="session")
def si() -> Structure:
    """Diamond Si, primitive cell, a = 5.43 Å (2 atoms).
    4 nearest at a√3/4 = 2.351 Å, then 12 at a/√2 = 3.840 Å."""
    return zincblende(5.43, "Si", "Si")


@pytest.fixture(scope="session")
def h2_in_box() -> Structure:
    """An H2 molecule (0.74 Å bond) alone in a 12 Å cubic box: one neighbour per atom
    within 3 Å (the periodic images are 12 Å away)."""
    return _h2_in_box(12.0, 0.74)


# --------------------------------------------------------------------------- tiny dataset
# formula -> (builder, lattice constant in Å, made-up base gap in eV)
TINY_PROTOTYPES = {
    "CsCl": (lambda a: caesium_chloride(a, "Cs", "Cl"), 4.12, 8.3),
    "NaCl": (lambda a: rocksalt(a, "Na", "Cl"), 5.64, 8.5),
    "MgO": (lambda a: rocksalt(a, "Mg", "O"), 4.21, 7.8),
    "LiF": (lambda a: rocksalt(a, "Li", "F"), 4.03, 13.6),
    "Si": (lambda a: zincblende(a, "Si", "Si"), 5.43, 1.1),
    "GaAs": (lambda a: zincblende(a, "Ga", "As"), 5.65, 1.4),
}
TINY_STRAINS = (0.97, 0.99, 1.01, 1.03)
TINY_ELEMENTS = (3, 8, 9, 11, 12, 14, 17, 31, 33, 55)  # Li O F Na Mg Si Cl Ga As Cs


def tiny_items_and_targets() -> tuple[list[tuple[str, Structure]], dict[str, float]]:
    items, targets = [], {}
    for formula, (build, a0, gap0) in TINY_PROTOTYPES.items():
        for s in TINY_STRAINS:
            mid = f"{formula}-{round(s * 100):03d}"
            items.append((mid, build(a0 * s)))
            targets[mid] = round(gap0 * (2 - s), 4)
    return items, targets


@pytest.fixture(scope="session")
def tiny_items() -> list[tuple[str, Structure]]:
    """24 ``(material_id, Structure)`` pairs: 6 prototypes x 4 strains, ids like ``NaCl-097``."""
    return tiny_items_and_targets()[0]


@pytest.fixture(scope="session")
def tiny_targets() -> dict[str, float]:
    return tiny_items_and_targets()[1]


@pytest.fixture(scope="session")
def tiny_features() -> AtomFeatures:
    """An 8-long feature table for the ten elements of the tiny dataset (values arbitrary)."""
    rng = np.random.default_rng(7)
    return AtomFeatures.from_dict({str(z): rng.uniform(0, 1, 8).round(3).tolist() for z in TINY_ELEMENTS})


@pytest.fixture(scope="session")
def tiny_graph_config() -> GraphConfig:
    """4 Å / 12 neighbours (21 Gaussians): a small cut-off that gives some crystals 12
    neighbours per atom and others fewer (rock salts with a > 5.66 Å keep only 6), so
    batches take both the regular and the irregular path."""
    return GraphConfig(radius=4.0, max_neighbors=12)


@pytest.fixture(scope="session")
def tiny_graphs(tiny_items, tiny_graph_config) -> GraphSet:
    graphs, problems = build_graphs(tiny_items, tiny_graph_config, progress=False)
    assert problems == [] and len(graphs) == 24
    return graphs


@pytest.fixture(scope="session")
def tiny_dataset(tiny_graphs, tiny_targets, tiny_features) -> CrystalDataset:
    ds = CrystalDataset(tiny_graphs, tiny_targets, tiny_features)
    assert len(ds) == 24 and ds.problems == []
    return ds


@pytest.fixture(scope="session")
def tiny_model_config() -> ModelConfig:
    return ModelConfig(atom_fea_len=8, h_fea_len=16, n_conv=2)


@pytest.fixture(scope="session")
def tiny_train_config() -> TrainConfig:
    """3 epochs of Adam on batches of 6, 16 / 5 / 3 split, CPU, no schedule."""
    return TrainConfig(
        epochs=3,
        batch_size=6,
        optimizer="adam",
        lr=0.01,
        scheduler="none",
        val_fraction=0.2,
        test_fraction=0.125,
        seed=0,
        device="cpu",
    )


# --------------------------------------------------------------------------- shared data
@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/data/cgcnn_reference`` (original CGCNN weights and predictions)."""
    if not (REFERENCE / "band-gap.pth.tar").is_file():
        pytest.skip(f"original CGCNN reference files not found at {REFERENCE} (../shared/data is absent)")
    return REFERENCE


# --------------------------------------------------------------------------- a trained run
@pytest.fixture(scope="session")
def tiny_run(tiny_dataset, tiny_train_config, tiny_model_config, tmp_path_factory):
    """One 3-epoch training run on the tiny dataset (shared, read-only: copy before
    changing anything in its folder)."""
    from cgcnn.training.fit import fit

    out = tmp_path_factory.mktemp("tiny_run")
    return fit(tiny_dataset, tiny_train_config, out, model_config=tiny_model_config, progress=False)
