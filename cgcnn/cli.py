"""``python -m cgcnn`` / ``cgcnn``: one command with sub-commands.

    cgcnn graphs   CIF folder(s) or snapshot -> graph set (cached, parallel)
    cgcnn train    train a model from scratch
    cgcnn adapt    fine-tune a checkpoint on a new dataset (freeze policy), or the control
    cgcnn evaluate metrics + per-material table of a model (default: the shipped ensemble) on a labelled set
    cgcnn predict  predictions for CIF files
    cgcnn embed    last-convolution crystal features and post-FC vectors
    cgcnn finetune adapt the shipped ensemble to a lab's own gaps (grouped CV, verdict, model folder)
    cgcnn etl      raw inputs -> DS1 / DS2 / DS3 (see ``cgcnn etl --help``)

(Over 400 lines — about 650: the argument parser and, for each sub-command, a few lines that call
the package and print one line per result or problem; nothing here computes anything, and the
``etl`` sub-commands live in :mod:`cgcnn.etl.commands`.)

Heavy imports (torch) happen inside the commands, so ``cgcnn graphs`` starts fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("cgcnn")


# --------------------------------------------------------------------------- helpers
def _graph_config(args, base=None):
    from cgcnn.config import GraphConfig

    data = base.to_dict() if base is not None else GraphConfig().to_dict()
    for key in ("radius", "max_neighbors"):
        if getattr(args, key, None) is not None:
            data[key] = getattr(args, key)
    return GraphConfig.model_validate(data)


def load_graph_inputs(
    inputs: list[str], cfg, *, workers: int = 1, cache_dir=None, on_error: str = "skip", strict: bool = False
):
    """Graph set and skipped items of the command's inputs (see :func:`cgcnn.data.building.read_inputs`)."""
    from cgcnn.data.building import read_inputs

    notes: list = []
    graphs, problems = read_inputs(
        inputs, cfg, workers=workers, cache_dir=cache_dir, on_error=on_error, strict=strict, notes=notes
    )
    for note in notes:  # what the CIF parser said about files that were kept
        _warn(note)
    return graphs, problems


def _train_config(args):
    from cgcnn.config import TrainConfig, load_config

    return load_config(
        TrainConfig,
        args.config,
        epochs=args.epochs,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        patience=args.patience,
    )


def _features(path):
    from cgcnn.data.features import AtomFeatures

    return AtomFeatures.from_json(path) if path else AtomFeatures.default()


# --------------------------------------------------------------------------- commands
def cmd_graphs(args) -> int:
    from cgcnn.errors import DatasetError

    cfg = _graph_config(args)
    out = Path(args.output)
    gs, problems = load_graph_inputs(
        args.inputs, cfg, workers=args.workers, cache_dir=args.cache, on_error=args.on_error, strict=args.strict
    )
    _warn_skipped(problems)
    if len(gs) == 0:
        first = f" (first: {problems[0]})" if problems else ""
        raise DatasetError(f"no structure could be read from {', '.join(args.inputs)}; {len(problems)} skipped{first}")
    gs.save_npz(out / "graphs.npz")
    if args.json:
        gs.write_json(out / "graphs.json.gz")
    _write_problems(out / "problems.csv", problems)
    print(f"{len(gs)} graphs ({gs.config.key()}) -> {out}; {len(problems)} skipped")
    return 0


def _write_problems(path: Path, problems) -> None:
    import pandas as pd

    from cgcnn.fileio import atomic_write_bytes

    df = pd.DataFrame([{"item": p.item_id, "reason": p.reason} for p in problems], columns=["item", "reason"])
    atomic_write_bytes(path, df.to_csv(index=False).encode())


def _dataset(args, cfg, features, seen: set | None = None):
    """The labelled dataset of ``--graphs`` / ``--targets``; ``seen`` (when given) receives
    the id of every structure read, labelled or not, kept or skipped."""
    from cgcnn.data.dataset import CrystalDataset, read_targets

    gs, problems = load_graph_inputs(
        args.graphs, cfg, workers=args.workers, on_error=args.on_error, strict=getattr(args, "strict", False)
    )
    targets = read_targets(args.targets, args.target_column) if getattr(args, "targets", None) else None
    ds = CrystalDataset(gs, targets, features, on_error=args.on_error)
    _warn_skipped(problems + ds.problems)
    if seen is not None:
        seen.update(gs.ids)
        seen.update(p.item_id for p in problems)
    return ds


def _print_fit(res) -> None:
    import math

    from cgcnn.training.distributed import context

    if not context().is_main:
        return  # under torchrun, rank 0 reports
    summary = {
        "best_checkpoint": str(res.best_checkpoint),
        "best_epoch": res.best_epoch,
        "best_val_mae": res.best_val_mae,
    }
    if math.isnan(res.best_val_mae):
        summary["best_val_mae"] = None
        summary["note"] = "no validation split (too few crystals or val_fraction 0): the last epoch is kept as best"
    print(json.dumps(summary))


def cmd_train(args) -> int:
    from cgcnn.config import ModelConfig, load_config
    from cgcnn.training.fit import fit

    cfg = _train_config(args)
    mc = load_config(ModelConfig, args.model_config)
    ds = _dataset(args, _graph_config(args), _features(args.atom_features))
    res = fit(ds, cfg, args.output, model_config=mc, resume=args.resume)
    _print_fit(res)
    return 0


def cmd_adapt(args) -> int:
    from cgcnn.config import AdaptConfig
    from cgcnn.training.adapt import adapt, train_control
    from cgcnn.training.checkpoint import load_checkpoint

    base = load_checkpoint(
        args.base, atom_features=args.atom_features, radius=args.radius, max_neighbors=args.max_neighbors
    )
    ds = _dataset(args, base.graph_config, base.features)
    tc = _train_config(args)
    if args.control:
        res = train_control(ds, tc, args.output, model_config=base.model_config, resume=args.resume)
    else:
        res = adapt(
            base,
            ds,
            AdaptConfig(freeze=args.freeze, normalizer=args.normalizer, train=tc),
            args.output,
            resume=args.resume,
        )
    _print_fit(res)
    return 0


def _loaded(args):
    from cgcnn.prediction.shipped import (
        ShippedModelError,
        member_checkpoints,
        shipped_models,
    )
    from cgcnn.training.checkpoint import load_checkpoint

    if args.checkpoint is None:
        if args.model is None:
            have = ", ".join(shipped_models()) or "none"
            raise ShippedModelError(f"give --checkpoint FILE or --model NAME (shipped models: {have})")
        return load_checkpoint(member_checkpoints(args.model)[0], device="cpu")
    return load_checkpoint(
        args.checkpoint,
        atom_features=args.atom_features,
        radius=args.radius,
        max_neighbors=args.max_neighbors,
        device="cpu",
    )


def cmd_evaluate(args) -> int:
    """Score a model on labelled structures: the rows ``predict`` would give them (same model
    default, same ``--pbe-gaps``), with the label and the error; one JSON line of metrics."""
    from cgcnn.data.building import snapshot_pbe_gaps
    from cgcnn.evaluation.scoring import scored_metrics, scored_sentence
    from cgcnn.fileio import atomic_write_bytes
    from cgcnn.prediction.streaming import unused_pbe_ids

    model = _predictor(args)
    pbe = _pbe_gaps(args, model)
    seen: set = set()
    ds = _dataset(args, model.loaded.graph_config, model.loaded.features, seen)
    if model.pbe_aware:  # as predict: a snapshot's own PBE gaps count as given; --pbe-gaps take precedence
        _warn_skipped(unused_pbe_ids(set(pbe or ()), seen))
        pbe = {**snapshot_pbe_gaps(args.graphs), **(pbe or {})}
    table = model.predict_dataset(ds, pbe=pbe)
    level = table.attrs.get("interval_level")
    table.insert(1, "target_ev", ds.y.astype(float))
    table.insert(3, "error_ev", table["prediction_ev"] - table["target_ev"])
    if len(model.members) == 1 and model.trees is None:  # one checkpoint: no spread to report
        table = table.drop(columns=["prediction_std_ev", "n_members"])
    if args.output:
        atomic_write_bytes(args.output, table.to_csv(index=False, float_format="%.6f").encode())
    metrics = scored_metrics(table, level)
    print(json.dumps(metrics))
    print(scored_sentence(metrics), file=sys.stderr)
    return 0


def _pbe_gaps(args, model) -> dict | None:
    """The known PBE gaps of ``--pbe-gaps`` (a warning when the model does not read them)."""
    from cgcnn.data.descriptors import read_pbe_gaps

    pbe = read_pbe_gaps(args.pbe_gaps) if args.pbe_gaps else None
    if pbe and not model.pbe_aware:
        print("warning: --pbe-gaps is ignored: this model does not read PBE gaps", file=sys.stderr)
    return pbe


def _warn(p) -> None:
    """One line on standard error for a skipped item or a warning about an item."""
    if p.kind == "warning":
        print(f"warning: {p.item_id}: {p.reason.removeprefix(p.item_id + ': ')}", file=sys.stderr)
    else:
        print(f"warning: skipped {p}", file=sys.stderr)


def _warn_skipped(problems) -> None:
    for p in problems:
        _warn(p)


def _level(text: str) -> float:
    """An interval level given as a fraction (0.9) or a percentage (90)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (e.g. 0.9 or 90)") from None
    value = value / 100 if value >= 1 else value
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a level between 0 and 1 (or 0 and 100 %)")
    return value


def _predictor(args):
    """The model of ``--checkpoint`` or ``--model`` (default: the shipped ensemble)."""
    from cgcnn.prediction.predictor import DEFAULT_MODEL, Predictor, load_model

    level = getattr(args, "interval_level", None)
    if args.checkpoint is None:
        model = load_model(args.model or DEFAULT_MODEL, device=args.device, interval_level=level)
    else:
        model = Predictor(_loaded(args), device=args.device, source=args.checkpoint)
    if level is not None and model.trust is None:
        print("warning: --interval-level is ignored: this model has no calibrated intervals", file=sys.stderr)
    return model


def cmd_predict(args) -> int:
    from cgcnn.prediction.streaming import parse_shard, predict_to_csv

    model = _predictor(args)
    pbe = _pbe_gaps(args, model)
    summary = predict_to_csv(
        model,
        args.inputs,
        args.output,
        chunk_size=args.chunk_size,
        shard=parse_shard(args.shard),
        workers=args.workers,
        on_error=args.on_error,
        progress=sys.stderr.isatty(),
        pbe=pbe,
        strict=args.strict,
        report=_warn,
        disorder=args.disorder,
    )
    print(f"{summary}" + (f" -> {args.output}" if args.output else ""), file=sys.stderr)
    return 0


def cmd_finetune(args) -> int:
    """Adapt the shipped ensemble to a lab's own gaps by grouped CV, with a verdict (docs/finetune.md)."""
    from cgcnn.config import load_config
    from cgcnn.finetune.run import finetune
    from cgcnn.finetune.settings import FinetuneSettings

    settings = load_config(FinetuneSettings, args.config, folds=args.folds, seed=args.seed)

    def echo(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    out, comparison, lab = finetune(
        args.table,
        args.structures,
        args.output,
        base=args.base,
        settings=settings,
        cache=args.cache,
        on_error=args.on_error,
        strict=args.strict,
        workers=args.workers,
        echo=None if args.quiet else echo,
        report=lambda p: _warn(p) if p.kind == "warning" else print(f"warning: left out {p}", file=sys.stderr),
    )
    table = comparison.table.drop(columns=["label"]).round(3)
    print(table.to_string(), file=sys.stderr)
    trust = json.loads((out / "manifest.json").read_text())["trust"]
    for row in trust["cross_fitted_coverage"]:
        print(
            f"{trust['level']:.0%} intervals, {row['subset']}: cross-fitted coverage {row['coverage']:.2f} of "
            f"{row['n']} materials, mean width {row['mean_width_ev']:.2f} eV",
            file=sys.stderr,
        )
    print(f"verdict: {comparison.verdict}")
    print(f"model folder ({comparison.final}) -> {out}; use it with: cgcnn predict --model {out} ...", file=sys.stderr)
    return 0


def cmd_embed(args) -> int:
    from cgcnn.prediction.predictor import Predictor
    from cgcnn.prediction.streaming import embed_to_npz

    model = _predictor(args) if args.checkpoint or args.model else Predictor(_loaded(args), device=args.device)
    summary, n_conv, n_hidden = embed_to_npz(
        model,
        args.graphs,
        args.output,
        chunk_size=args.chunk_size,
        workers=args.workers,
        on_error=args.on_error,
        progress=sys.stderr.isatty(),
        strict=args.strict,
        report=_warn,
    )
    print(f"{summary.written} embeddings (conv {n_conv}, hidden {n_hidden}) -> {args.output}")
    return 0


# --------------------------------------------------------------------------- parser
def _graph_args(p, required=False) -> None:
    p.add_argument("--radius", type=float, default=None, help="neighbour cut-off in Å (default 8; the study used 7)")
    p.add_argument(
        "--max-neighbors", type=int, default=None, help="neighbours kept per atom (default 12; the study used 14)"
    )


def _common(p) -> None:
    p.add_argument("--workers", type=int, default=1, help="processes for graph building")
    p.add_argument(
        "--on-error",
        choices=("skip", "error"),
        default="skip",
        help="bad items: skip with a warning, or stop (implies --strict)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse a CIF whose parser warnings say the structure may not be what the file says "
        "(a declared formula that differs, missing hydrogens, an unknown space group read as P1, ...)",
    )


def _train_args(p) -> None:
    p.add_argument("--config", help="TrainConfig JSON (unknown keys rejected)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"))
    p.add_argument("--patience", type=int)
    p.add_argument("--device", default=None, help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.pt")
    p.add_argument("--output", required=True, help="run folder (checkpoints, history.csv, run.json)")


def _data_args(p, targets_required=True) -> None:
    p.add_argument(
        "--graphs",
        nargs="+",
        required=True,
        help="graphs.npz / graphs.json.gz / snapshot .jsonl.gz / CIF files or folders (searched recursively)",
    )
    p.add_argument("--targets", required=targets_required, help="CSV with material_id and a label column")
    p.add_argument("--target-column", default=None)


def _ckpt_args(p) -> None:
    which = p.add_mutually_exclusive_group()
    which.add_argument("--checkpoint", help="a checkpoint file (ours, or an original CGCNN .pth.tar)")
    which.add_argument(
        "--model",
        help="a model shipped with the package: 'ensemble' (experimental gaps with an uncertainty; "
        "the default of predict and evaluate) or 'base' (M1: PBE-like gaps), or a model folder "
        "(one written by cgcnn finetune)",
    )
    p.add_argument("--atom-features", default=None, help="atom_init.json (required for original CGCNN checkpoints)")
    _graph_args(p)
    p.add_argument("--device", default="auto")


def _prediction_args(p) -> None:
    p.add_argument(
        "--interval-level",
        type=_level,
        default=None,
        help="level of the central interval prediction_lo_ev..prediction_hi_ev of a calibrated model "
        "(the shipped ensemble): 0.9 (default) or 90 for 90 %%",
    )
    p.add_argument(
        "--pbe-gaps",
        default=None,
        help="CSV material_id,pbe_gap_ev of known PBE gaps (PBE-aware models; others are predicted by the base model)",
    )


def build_parser() -> argparse.ArgumentParser:
    from cgcnn.training.freeze import POLICIES

    parser = argparse.ArgumentParser(prog="cgcnn", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step (and every skipped item)")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks of errors (also: CGCNN_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("graphs", help="build crystal graphs")
    p.add_argument(
        "inputs",
        nargs="+",
        help="a snapshot (.jsonl.gz), CIF files, or folders of CIFs (searched recursively for .cif, .cif.gz, .mcif)",
    )
    p.add_argument(
        "--output", required=True, help="folder for graphs.npz (+ graphs.json.gz with --json) and problems.csv"
    )
    p.add_argument("--cache", default=None, help="graph-cache folder (keyed by content + settings); default: none")
    p.add_argument("--json", action="store_true", help="also write the JSON form")
    _graph_args(p)
    _common(p)
    p.set_defaults(func=cmd_graphs)

    p = sub.add_parser("train", help="train from scratch")
    _data_args(p)
    _train_args(p)
    _graph_args(p)
    _common(p)
    p.add_argument("--model-config", default=None, help="ModelConfig JSON")
    p.add_argument("--atom-features", default=None, help="atom_init.json (default: our generated table)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("adapt", help="fine-tune a base checkpoint (or train the control)")
    p.add_argument("--base", required=True, help="base checkpoint")
    p.add_argument("--freeze", choices=POLICIES, default="none")
    p.add_argument("--normalizer", choices=("keep", "refit"), default="refit")
    p.add_argument("--control", action="store_true", help="train the base's architecture from random weights instead")
    p.add_argument("--atom-features", default=None)
    _data_args(p)
    _train_args(p)
    _graph_args(p)
    _common(p)
    p.set_defaults(func=cmd_adapt)

    p = sub.add_parser(
        "evaluate",
        help="score a model (default: the shipped ensemble) on labelled structures: metrics and a per-material table",
    )
    _ckpt_args(p)
    _data_args(p)
    _common(p)
    p.add_argument(
        "--output",
        default=None,
        help="per-material CSV: material_id,target_ev,prediction_ev,error_ev and the other columns of predict",
    )
    _prediction_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predict band gaps for structures")
    _ckpt_args(p)
    _common(p)
    p.add_argument(
        "inputs",
        nargs="+",
        help="CIF files or folders of CIFs (searched recursively for .cif, .cif.gz and .mcif in any case; hidden "
        "files skipped; every block of a multi-block CIF is a structure <id>:<block>), a snapshot (.jsonl.gz), "
        "or a saved graph set (.npz / .json.gz)",
    )
    p.add_argument(
        "--output",
        default=None,
        help="CSV in input order (material_id,prediction_ev,prediction_std_ev,n_members"
        "[,pbe_gap_ev,pbe_gap_source][,prediction_lo_ev,prediction_hi_ev,in_domain,domain_note]), "
        "written atomically; default stdout",
    )
    _prediction_args(p)
    p.add_argument(
        "--chunk-size",
        type=int,
        default=1024,
        help="structures read, built and predicted at a time (memory is bounded by it)",
    )
    p.add_argument(
        "--shard", default=None, help="K/N: predict only the K-th of N contiguous parts of the input (K from 1)"
    )
    p.add_argument(
        "--disorder",
        choices=("refuse", "end-members", "orderings"),
        default="refuse",
        help="partially occupied sites: refuse the structure (default); 'end-members': the occupancy-weighted "
        "mean over its end members; 'orderings': the mean over 8 random orderings in a supercell. With a method, "
        "a column 'disorder' names it for each such structure",
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "finetune",
        help="adapt the shipped ensemble to your own measured gaps: grouped CV of zero-shot, recalibration, "
        "fine-tuning and residual trees, a verdict, and a model folder for predict --model",
    )
    p.add_argument("table", help="CSV material_id,bg_exp[,pbe_gap_ev]: your measured gaps (eV) and optional PBE gaps")
    p.add_argument(
        "structures",
        nargs="+",
        help="the structures, read as cgcnn predict reads them: CIF files or folders (ids = file names without the "
        "suffix), a snapshot (.jsonl.gz), or a saved graph set",
    )
    p.add_argument(
        "--output", required=True, help="the model folder to write (built beside it, renamed into place at the end)"
    )
    p.add_argument("--base", default="ensemble", help="the model to adapt: the shipped 'ensemble' (default) or a copy")
    p.add_argument("--config", default=None, help="FinetuneSettings JSON (unknown keys rejected; docs/finetune.md)")
    p.add_argument("--folds", type=int, default=None, help="outer folds (default: 3-5 by the table's size)")
    p.add_argument("--seed", type=int, default=None, help="seed of the folds and fits (default 0)")
    p.add_argument(
        "--cache",
        default=None,
        help="fit cache folder, kept (default: .<output>.fits beside the output, removed when the run succeeds); "
        "a rerun after a crash resumes from it",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    _common(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("embed", help="crystal features (last conv layer) and post-FC vectors")
    _ckpt_args(p)
    _data_args(p, targets_required=False)
    _common(p)
    p.add_argument("--output", required=True, help=".npz with material_id, conv, hidden (written atomically)")
    p.add_argument("--chunk-size", type=int, default=1024, help="structures read, built and embedded at a time")
    p.set_defaults(func=cmd_embed)

    try:
        from cgcnn.etl import commands as etl_cli
    except ImportError:  # pragma: no cover - the ETL sub-package is part of this package
        etl_cli = None
    if etl_cli is not None and hasattr(etl_cli, "add_parser"):
        etl_cli.add_parser(sub)
    return parser


def error_line(exc: BaseException) -> str | None:
    """The one-line message of an expected failure (bad input, bad settings, a file that
    cannot be read or written), or None for a bug (which keeps its traceback)."""
    from pydantic import ValidationError

    from cgcnn.errors import CgcnnError

    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or exc.title
        return f"error: invalid setting {where!r} in {exc.title}: {first['msg']} ({exc.error_count()} error(s) in all); fix the config or option"
    if isinstance(exc, CgcnnError):
        text = str(exc).strip().splitlines()
        return f"error: {text[0] if text else type(exc).__name__}"
    if isinstance(exc, OSError) and exc.filename:
        return f"error: {exc.filename}: {exc.strerror or exc}; check the path and its permissions"
    return None


def debugging(args=None) -> bool:
    """Tracebacks are shown with ``--debug`` or a non-empty ``CGCNN_DEBUG``."""
    import os

    return bool(getattr(args, "debug", False) or os.environ.get("CGCNN_DEBUG"))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(
            "error: interrupted; outputs are written whole or not at all, so none was left half-written",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:
        line = error_line(exc)
        if line is None or debugging(args):
            raise
        raise SystemExit(line) from None
    finally:
        _leave_process_group()


def run() -> None:
    """The console entry point (``cgcnn``, ``python -m cgcnn``): :func:`main`, then exit.

    On the way out every object is moved to the garbage collector's permanent generation
    (``gc.freeze``), so the interpreter's final collections skip the ~10^5 objects torch,
    pandas and pymatgen create: ~0.4 s less per command.  Outputs, ``atexit`` handlers and
    finalisation are unaffected (the process is ending; nothing is left to collect).
    """
    import gc
    import os
    import signal

    # a termination request unwinds like an error: temporary files are removed, nothing half-written stays
    # (not under torchrun, whose agent stops its workers itself)
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        sys.exit(main())
    finally:
        gc.freeze()


def _leave_process_group() -> None:
    """Under torchrun, leave the process group that training joined (cgcnn.training.distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
