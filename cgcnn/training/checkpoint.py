"""Self-describing checkpoints, and loading the original CGCNN ``.pth.tar`` files.

Our checkpoints hold everything needed to predict on any machine with nothing beside
them: format version, model config, graph settings, the atom-feature table itself, the
target normaliser, the weights, and (for resuming) optimiser state, shuffling-generator
state, epoch and history.  They contain only tensors, numbers, strings, lists and dicts,
so they are always read with ``torch.load(weights_only=True)``; nothing is unpickled.

Original CGCNN checkpoints (``{"state_dict", "normalizer", "args", ...}``) record neither
the atom features nor the graph settings, so loading one requires ``atom_features``,
``radius`` and ``max_neighbors`` explicitly: a wrong guess would silently give wrong
numbers.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cgcnn.config import FORMAT_VERSION, GraphConfig, ModelConfig
from cgcnn.data.features import AtomFeatures
from cgcnn.errors import CgcnnError
from cgcnn.fileio import atomic_write_bytes
from cgcnn.nn.model import CGCNN
from cgcnn.training.normalizer import Normalizer

FORMAT = "cgcnn-da/checkpoint"


class CheckpointError(CgcnnError, ValueError):
    """A checkpoint that cannot be used as asked (the message says why)."""


@dataclass
class Loaded:
    """A model ready to predict, with everything that describes it."""

    model: CGCNN
    graph_config: GraphConfig
    features: AtomFeatures
    normalizer: Normalizer
    meta: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def model_config(self) -> ModelConfig:
        return self.model.config


def build_model(model_config: ModelConfig, features: AtomFeatures, graph: GraphConfig) -> CGCNN:
    return CGCNN(model_config, atom_table=features.table, graph=graph)


def checkpoint_dict(
    model: CGCNN,
    features: AtomFeatures,
    normalizer: Normalizer,
    *,
    epoch: int,
    extra: dict | None = None,
) -> dict:
    """The checkpoint contents (see module docstring)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    out = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": model.config.to_dict(),
        "graph_config": model.graph_config.to_dict(),
        "atom_features": {"source": features.source, "table": features.to_dict()},
        "normalizer": normalizer.to_dict(),
        "state_dict": state,
        "epoch": int(epoch),
    }
    out.update(extra or {})
    return out


def save_checkpoint(path: str | Path, contents: dict) -> None:
    """Write a checkpoint atomically (temporary file + rename)."""
    buf = io.BytesIO()
    torch.save(contents, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or would run code when unpickled
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: cannot be read safely with torch.load(weights_only=True) ({reason[:200]}); "
            "is it a complete checkpoint written by cgcnn or the original CGCNN?"
        ) from None
    if not isinstance(raw, dict):
        raise CheckpointError(
            f"{path}: holds a {type(raw).__name__}, not a checkpoint (a dict with weights and settings)"
        )
    return raw


def is_original(raw: dict) -> bool:
    return "format" not in raw and "state_dict" in raw and "normalizer" in raw


def original_model_config(state: dict, orig_atom_fea_len: int) -> ModelConfig:
    """Architecture of an original checkpoint, read from its weight shapes."""
    n_conv = len({m.group(1) for k in state if (m := re.match(r"convs\.(\d+)\.fc_full\.weight$", k))})
    atom_fea_len = state["embedding.weight"].shape[0]
    n_fcs = len({m.group(1) for k in state if (m := re.match(r"fcs\.(\d+)\.weight$", k))})
    return ModelConfig(
        orig_atom_fea_len=int(state["embedding.weight"].shape[1]),
        nbr_fea_len=int(state["convs.0.fc_full.weight"].shape[1] - 2 * atom_fea_len),
        atom_fea_len=int(atom_fea_len),
        n_conv=n_conv,
        h_fea_len=int(state["conv_to_fc.weight"].shape[0]),
        n_h=1 + n_fcs,
    )


def load_checkpoint(
    path: str | Path,
    *,
    atom_features: str | Path | AtomFeatures | None = None,
    radius: float | None = None,
    max_neighbors: int | None = None,
    step: float = 0.2,
    device: str | torch.device = "cpu",
) -> Loaded:
    """Load one of our checkpoints, or an original CGCNN one (then the feature table and
    graph settings must be given: ``atom_features``, ``radius``, ``max_neighbors``)."""
    raw = read_checkpoint(path)
    if is_original(raw):
        missing = [
            n
            for n, v in (("--atom-features", atom_features), ("--radius", radius), ("--max-neighbors", max_neighbors))
            if v is None
        ]
        if missing:
            raise CheckpointError(
                f"{path} is an original CGCNN checkpoint, which records neither its atom features nor its "
                f"graph settings; give {', '.join(missing)} (e.g. the CGCNN band-gap model uses atom_init.json, "
                f"radius 8, 12 neighbours; the domain-adaptation study's base model radius 7, 14 neighbours)"
            )
        features = atom_features if isinstance(atom_features, AtomFeatures) else AtomFeatures.from_json(atom_features)
        state = raw["state_dict"]
        try:
            cfg = original_model_config(state, features.length)
        except (KeyError, IndexError, AttributeError, TypeError) as exc:
            raise CheckpointError(
                f"{path}: the weights are not those of a CGCNN (missing or malformed {exc}); is this a CGCNN checkpoint?"
            ) from None
        graph = GraphConfig(radius=float(radius), max_neighbors=int(max_neighbors), dmin=0.0, step=step)
        if graph.n_gaussians != cfg.nbr_fea_len:
            raise CheckpointError(
                f"{path}: the weights expect {cfg.nbr_fea_len} distance features but radius {radius} with step "
                f"{step} gives {graph.n_gaussians}; the radius is wrong for this checkpoint"
            )
        if features.length != cfg.orig_atom_fea_len:
            raise CheckpointError(
                f"{path}: the weights expect {cfg.orig_atom_fea_len} atom features, the table has {features.length}"
            )
        normalizer = Normalizer.from_dict(raw["normalizer"])
        meta = {
            "origin": "original CGCNN checkpoint",
            "epoch": raw.get("epoch"),
            "best_mae_error": _num(raw.get("best_mae_error")),
        }
    elif raw.get("format") == FORMAT:
        if raw.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: checkpoint format version {raw.get('format_version')} is not {FORMAT_VERSION}"
            )
        try:
            cfg = ModelConfig.model_validate(raw["model_config"])
            graph = GraphConfig.model_validate(raw["graph_config"])
            stored = AtomFeatures.from_dict(raw["atom_features"]["table"], source=raw["atom_features"].get("source"))
            state, normalizer = raw["state_dict"], Normalizer.from_dict(raw["normalizer"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{path}: damaged checkpoint (missing or malformed {str(exc).splitlines()[0][:120]})"
            ) from None
        if atom_features is not None:
            given = atom_features if isinstance(atom_features, AtomFeatures) else AtomFeatures.from_json(atom_features)
            if given != stored:
                raise CheckpointError(f"{path}: the given atom features differ from the table stored in the checkpoint")
        for name, given_v, own in (
            ("radius", radius, graph.radius),
            ("max_neighbors", max_neighbors, graph.max_neighbors),
        ):
            if given_v is not None and float(given_v) != float(own):
                raise CheckpointError(f"{path}: {name}={given_v} given but the checkpoint was trained with {own}")
        features = stored
        meta = {k: raw.get(k) for k in ("epoch", "best_val_mae", "best_epoch", "meta", "train_config")}
    else:
        raise CheckpointError(f"{path}: not a CGCNN checkpoint (no state_dict / unknown format {raw.get('format')!r})")

    model = build_model(cfg, features, graph)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the architecture: {exc}") from None
    model.to(device).eval()
    return Loaded(model=model, graph_config=graph, features=features, normalizer=normalizer, meta=meta, raw=raw)


def _num(v):
    if isinstance(v, torch.Tensor):
        return float(v.item())
    return v
