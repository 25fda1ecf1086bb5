"""CHGNet as a backbone: its pretrained crystal representation, computed once per crystal and
cached by content, and the parts of it a fine-tuning trains.

CHGNet (Deng et al., Nat. Mach. Intell. 2023; ``pip install -e ".[chgnet]"``) was pretrained on
~1.5 M Materials Project calculations (energies, forces, stresses, magnetic moments); its
weights ship inside the wheel (``MODEL_VERSION``), so nothing is downloaded at run time.

**Which layer.**  The representation of a crystal is the atom features after CHGNet's last
interaction block and its readout LayerNorm — the input of its energy readout, the deepest
layer before the representation is mapped to an energy — **averaged** over atoms.  (CHGNet
itself sums them, so its own ``crystal_fea`` grows with the cell chosen; a band gap is
intensive.)  A fine-tuning starts one block earlier: what enters the last interaction block
is cached too (atom and bond features, bond weights, the directed graph), so training that
block and the readout never reruns the frozen layers.

Each crystal's record is an ``.npz`` under ``<root>/<key[:2]>/<key>.npz``, keyed by the sha256
of the structure (pymatgen's dict, keys sorted), the model version and the chgnet version
(:func:`structure_key`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from cgcnn.errors import CgcnnError

MODEL_VERSION = "0.3.0"
FEATURE_DIM = 64
_ARRAYS = ("atoms", "pre_atoms", "bond_feas", "bond_weights", "atom_graph", "d2u")

__all__ = [
    "FEATURE_DIM",
    "MODEL_VERSION",
    "BackboneUnavailable",
    "ChgnetRecord",
    "FeatureStore",
    "available",
    "load_backbone",
    "structure_key",
]


class BackboneUnavailable(CgcnnError, ImportError):
    """CHGNet is not installed (it is an optional extra)."""


def available() -> str | None:
    """None when CHGNet can be used, else why not (one line)."""
    try:
        import chgnet  # noqa: F401
    except ImportError:
        return 'CHGNet is not installed: pip install -e ".[chgnet]" to include its recipes'
    return None


@cache
def load_backbone(version: str = MODEL_VERSION):
    """The pretrained CHGNet model (CPU, evaluation mode; loaded once per process)."""
    why = available()
    if why:
        raise BackboneUnavailable(why)
    import contextlib
    import io

    from chgnet.model import CHGNet

    with contextlib.redirect_stdout(io.StringIO()):  # it announces itself on stdout
        model = CHGNet.load(model_name=version, use_device="cpu", verbose=False)
    return model.eval()


def structure_key(structure, version: str = MODEL_VERSION) -> str:
    """Content key of one crystal's record: the structure, the model version, the code version."""
    import chgnet

    text = json.dumps(structure.as_dict(), sort_keys=True, default=str)
    return hashlib.sha256(f"chgnet:{chgnet.__version__}:{version}\n{text}".encode()).hexdigest()


@dataclass(frozen=True)
class ChgnetRecord:
    """One crystal as CHGNet sees it: ``atoms`` [n, 64] (readout input), and what enters the
    last interaction block: ``pre_atoms`` [n, 64], ``bond_feas`` / ``bond_weights`` [b, 64]
    (undirected bonds), ``atom_graph`` [e, 2] (directed: centre, neighbour) and ``d2u`` [e]
    (directed -> undirected bond)."""

    atoms: np.ndarray
    pre_atoms: np.ndarray
    bond_feas: np.ndarray
    bond_weights: np.ndarray
    atom_graph: np.ndarray
    d2u: np.ndarray

    @property
    def crystal(self) -> np.ndarray:
        """The crystal's representation: its atoms' readout inputs, averaged [64]."""
        return self.atoms.mean(axis=0)


class FeatureStore:
    """Per-crystal CHGNet records, computed once and kept by content (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, version: str = MODEL_VERSION):
        self.root = Path(root) / f"chgnet-{version}"
        self.version = version

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def records(
        self,
        structures: Mapping[str, object],
        *,
        batch_size: int = 16,
        on_error: Callable[[str, str], None] | None = None,
    ) -> dict[str, ChgnetRecord]:
        """id -> record of every structure (computed for those not stored yet).  A structure
        CHGNet cannot take (e.g. an atom with no neighbour within its cutoff) is left out and
        reported through ``on_error(id, reason)``."""
        keys = {mid: structure_key(s, self.version) for mid, s in structures.items()}
        todo = [mid for mid, k in keys.items() if not self.path(k).is_file()]
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            for mid, record in _compute(self.version, [structures[m] for m in chunk], chunk, on_error).items():
                self._write(keys[mid], record)
        out = {}
        for mid, key in keys.items():
            if self.path(key).is_file():
                with np.load(self.path(key)) as z:
                    out[mid] = ChgnetRecord(*(z[name] for name in _ARRAYS))
        return out

    def _write(self, key: str, record: ChgnetRecord) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **{name: getattr(record, name) for name in _ARRAYS})
        os.replace(tmp, path)


def _compute(
    version: str, structures: Sequence, ids: Sequence[str], on_error: Callable[[str, str], None] | None
) -> dict[str, ChgnetRecord]:
    """Records of a batch: CHGNet run once (no gradients), the inputs of its last interaction
    block and the readout input captured by hooks, then split per crystal."""
    import torch

    model = load_backbone(version)
    graphs, kept = [], []
    for mid, s in zip(ids, structures):
        try:
            graphs.append(model.graph_converter(s))
            kept.append(mid)
        except Exception as exc:  # CHGNet's converter raises plain exceptions for graphs it cannot build
            if on_error is not None:
                on_error(mid, f"CHGNet cannot build its graph: {exc}")
    if not graphs:
        return {}
    seen: dict = {}
    block, norm = model.atom_conv_layers[-1], model.readout_norm
    hooks = [
        block.register_forward_pre_hook(lambda mod, args, kw: seen.update(kw), with_kwargs=True),
        norm.register_forward_hook(lambda mod, args, out: seen.update(atoms=out)),
    ]
    try:
        with torch.no_grad():
            model(graphs, task="e")
    finally:
        for h in hooks:
            h.remove()
    out, a0, b0, e0 = {}, 0, 0, 0
    for mid, g in zip(kept, graphs):
        n, b, e = len(g.atomic_number), len(g.undirected2directed), len(g.atom_graph)
        out[mid] = ChgnetRecord(
            seen["atoms"][a0 : a0 + n].numpy().astype(np.float32),
            seen["atom_feas"][a0 : a0 + n].numpy().astype(np.float32),
            seen["bond_feas"][b0 : b0 + b].numpy().astype(np.float32),
            seen["bond_weights"][b0 : b0 + b].numpy().astype(np.float32),
            (seen["atom_graph"][e0 : e0 + e] - a0).numpy().astype(np.int64),
            (seen["directed2undirected"][e0 : e0 + e] - b0).numpy().astype(np.int64),
        )
        a0, b0, e0 = a0 + n, b0 + b, e0 + e
    return out
