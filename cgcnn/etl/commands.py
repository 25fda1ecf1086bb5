"""``cgcnn etl`` sub-commands.

::

    cgcnn etl run      --bucket URI --materials (snapshot:PATH | mp) [--config FILE] [--workers N]
                       [--raw-from DIR_OR_URI]
    cgcnn etl snapshot --out PATH (--bucket URI [--config FILE] | --ids CSV) [--materials mp]
    cgcnn etl prepare  --raw-from DIR_OR_URI --bucket URI

The package CLI calls :func:`add_parser`; ``python -m cgcnn.etl`` runs the same commands
stand-alone.  Failures the user can fix (missing key, bucket, credentials, column) print one
line to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import io
import json
import sys

__all__ = ["add_parser", "build_parser", "main"]


def _fixable() -> tuple[type[BaseException], ...]:
    from pydantic import ValidationError

    from cgcnn.etl.materials import MaterialsError
    from cgcnn.etl.parsing import EtlError
    from cgcnn.etl.storage import StorageError

    return (StorageError, MaterialsError, EtlError, ValidationError, FileNotFoundError)


def _add_commands(sub) -> None:
    p = sub.add_parser("run", help="raw inputs -> DS1/DS2/DS3 tables, JSON datasets, graphs, reports")
    p.add_argument("--bucket", required=True, help="s3://bucket/prefix or a local folder holding raw/")
    p.add_argument("--materials", required=True, help="snapshot:PATH (offline), mp (live, MP_API_KEY) or mp:ENDPOINT")
    p.add_argument("--config", default=None, help="EtlConfig JSON file (unknown keys are errors)")
    p.add_argument("--workers", type=int, default=1, help="processes for graph building")
    p.add_argument("--raw-from", default=None, help="copy this raw/ folder (or bucket) into the bucket first")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(etl_command="run")

    p = sub.add_parser("snapshot", help="freeze Materials Project records into a snapshot file")
    p.add_argument(
        "--out", required=True, help="snapshot file to write (…/summary.jsonl.gz); metadata.json goes beside it"
    )
    p.add_argument("--bucket", default=None, help="take ids and formulas from this bucket's raw tables")
    p.add_argument("--config", default=None, help="EtlConfig JSON naming the raw tables")
    p.add_argument("--ids", default=None, help="CSV file with a material_id column (instead of --bucket)")
    p.add_argument("--materials", default="mp", help="source to freeze: mp (default), mp:ENDPOINT or snapshot:PATH")
    p.add_argument("--description", default=None, help="text for metadata.json")
    p.set_defaults(etl_command="snapshot")

    p = sub.add_parser("prepare", help="copy raw inputs into a work bucket (identical files skipped)")
    p.add_argument("--raw-from", required=True, help="bucket root or raw/ folder to copy from")
    p.add_argument("--bucket", required=True, help="work bucket (s3://… or a local folder)")
    p.set_defaults(etl_command="prepare")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``etl`` (with ``run``, ``snapshot``, ``prepare``) on a sub-parser set."""
    parser = subparsers.add_parser("etl", help="raw inputs -> DS1 / DS2 / DS3 (S3 or local; MP live or snapshot)")
    sub = parser.add_subparsers(dest="etl_command", required=True)
    _add_commands(sub)
    parser.set_defaults(func=main)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cgcnn.etl", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="etl_command", required=True)
    _add_commands(sub)
    return parser


def _cmd_run(args) -> int:
    from cgcnn.config import EtlConfig
    from cgcnn.etl.raw import prepare_work_bucket
    from cgcnn.etl.run import run_etl

    config = EtlConfig.load(args.config)
    if args.raw_from:
        copied = prepare_work_bucket(args.raw_from, args.bucket)
        if not args.quiet:
            print(
                f"[etl] raw inputs: {len(copied['copied'])} copied, {len(copied['skipped'])} unchanged", file=sys.stderr
            )
    result = run_etl(args.bucket, args.materials, config, workers=args.workers, progress=not args.quiet)
    print(result.summary())
    return 0


def _cmd_snapshot(args) -> int:
    import pandas as pd

    from cgcnn.config import EtlConfig
    from cgcnn.etl.materials import open_materials, write_snapshot
    from cgcnn.etl.raw import read_raw_tables
    from cgcnn.etl.storage import open_bucket

    if bool(args.bucket) == bool(args.ids):
        raise SystemExit("etl snapshot: give exactly one of --bucket or --ids")
    formulas: list[str] = []
    if args.bucket:
        config = EtlConfig.load(args.config)
        ids, formulas = read_raw_tables(open_bucket(args.bucket), config).queries(config)
    else:
        with open(args.ids, "rb") as fh:
            table = pd.read_csv(io.BytesIO(fh.read()), dtype=str, keep_default_na=False)
        if "material_id" not in table.columns:
            raise SystemExit(f"etl snapshot: {args.ids} has no material_id column")
        ids = [i.strip() for i in table["material_id"] if i.strip()]
    source = open_materials(args.materials)
    meta = write_snapshot(source, args.out, ids=ids, formulas=formulas, description=args.description)
    print(json.dumps({k: meta[k] for k in ("n_materials", "database_version", "sha256")}))
    return 0


def _cmd_prepare(args) -> int:
    from cgcnn.etl.raw import prepare_work_bucket

    out = prepare_work_bucket(args.raw_from, args.bucket)
    print(f"{out['bucket']}: {len(out['copied'])} copied, {len(out['skipped'])} unchanged")
    return 0


def main(args: argparse.Namespace | list[str] | None = None) -> int:
    """Run one ``etl`` sub-command (a parsed namespace, or argv for the stand-alone CLI)."""
    if not isinstance(args, argparse.Namespace):
        args = build_parser().parse_args(args)
    commands = {"run": _cmd_run, "snapshot": _cmd_snapshot, "prepare": _cmd_prepare}
    try:
        return commands[args.etl_command](args)
    except _fixable() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
