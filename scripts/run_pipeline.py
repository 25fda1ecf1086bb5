#!/usr/bin/env python3
"""Run the whole study: the notebooks in order, with papermill, into one run folder.

    python scripts/run_pipeline.py                     # bundled fixture, profile "fixture"
    python scripts/run_pipeline.py --bucket ../shared/data/bucket \\
        --materials snapshot:../shared/data/mp_snapshot/summary.jsonl.gz --profile default
    python scripts/run_pipeline.py --bucket s3://my-bucket --materials mp --profile paper --device cuda

Run folder ``<output>/<run-id>/``:

    config.json        resolved profile + inputs            environment.json  versions, git SHA, machine
    notebooks/…        executed notebooks                   stages/*.json     one manifest per stage
    bucket/            the run's work bucket (a copy of the raw inputs + ETL outputs)
    data/ models/ tables/ figures/ and the records            written by the notebooks (cgcnn.study.rundir.RUN_FILES)

A stage is skipped when its manifest says it completed with the same inputs: the same
parameters, notebook, the code it runs (the ``cgcnn`` modules its notebook imports,
transitively, and the package data they read), the settings it reads, the input files and the
outputs of the stages before it, and its own outputs are still in place.  Otherwise the
runner says why it runs (``code changed: cgcnn/study/report.py``, ``settings changed:
adapt.lr_grid``, ...).  ``--force`` runs every stage again; ``--from STAGE`` runs that stage
and every later one, ``--only STAGE`` just that one (by name or number; both refuse when an
earlier stage's outputs are missing).  ``--set KEY=VALUE`` changes one setting of the profile
(a dotted key, a JSON value).  A failing stage stops the run; the message names the notebook
cell that failed.

The default ``--run-id`` is ``<profile>-<hash of settings and inputs>``, so running the same
command again reuses the folder (and skips what is done).  ``<output>/latest`` is a link to
the folder of the last run: the notebooks' default ``run_dir``, so a notebook opened in
JupyterLab reads (and, rerun, writes) that run.

(Over 400 lines: the command line, the stage table and the :class:`Pipeline` that decides,
per stage, whether it is up to date — one job, the runner; the notebooks and the package
hold the study itself.)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cgcnn.fileio import atomic_write_text, sha256_file, write_json

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BUCKET = REPO / "tests" / "fixtures" / "bucket"
DEFAULT_MATERIALS = "snapshot:" + str(REPO / "tests" / "fixtures" / "mp_snapshot" / "summary.jsonl.gz")
SECRET_VARIABLES = ("MP_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# Files of the run folder that are never stage outputs.
_NOT_OUTPUTS = ("notebooks/", "stages/", "config.json", "environment.json", ".lock")
# <output>/latest -> the last run folder: the notebooks' default run_dir ("../runs/latest").
LATEST = "latest"
# Outputs no later stage reads, which hold timings and the environment (the ETL's report for the
# bucket's users): they are checked like any output but left out of the digest later stages
# depend on, so a rerun that changes only them reruns nothing after it.
_RECORDS = ("bucket/reports/etl_report.json",)


ALL_SETTINGS = None  # a stage that reads every setting
_RUNTIME = ("device", "torch_threads")


@dataclass(frozen=True)
class Stage:
    """One notebook of the pipeline, the parameters it declares and the settings it reads.

    ``settings`` names the top-level sections of the profile the stage reads (``None``: all
    of them); a change elsewhere does not rerun it (what it reads from earlier stages is
    covered by their outputs)."""

    name: str
    notebook: Path
    params: tuple[str, ...] = ("run_dir", "config")
    settings: tuple[str, ...] | None = ALL_SETTINGS

    @property
    def relpath(self) -> str:
        try:
            return self.notebook.relative_to(REPO).as_posix()
        except ValueError:
            return self.notebook.name


STAGES: tuple[Stage, ...] = (
    Stage(
        "etl",
        REPO / "01-data-preparation" / "01-etl.ipynb",
        ("run_dir", "config", "bucket", "materials", "workers"),
        ("graph", "etl", "workers"),
    ),
    Stage("eda", REPO / "01-data-preparation" / "02-eda.ipynb", settings=()),
    Stage(
        "base-model",
        REPO / "02-ml-dev" / "01-base-model.ipynb",
        settings=("graph", "model", "base", "nproc", *_RUNTIME),
    ),
    Stage("cross-validation", REPO / "02-ml-dev" / "02-cross-validation.ipynb", settings=("adapt", "cv", *_RUNTIME)),
    Stage("methods", REPO / "02-ml-dev" / "03-methods.ipynb", settings=("methods", "cv", *_RUNTIME)),
    Stage("trust", REPO / "02-ml-dev" / "04-trust.ipynb", settings=("methods", "cv", "trust", *_RUNTIME)),
    Stage(
        "final-models-and-ds3",
        REPO / "02-ml-dev" / "05-final-models-and-ds3.ipynb",
        settings=("adapt", "cv", "methods", "trust", "seeds", *_RUNTIME),
    ),
    Stage("tsne", REPO / "03-insights" / "01-tsne.ipynb", settings=("tsne", *_RUNTIME)),
    Stage("report", REPO / "03-insights" / "02-report.ipynb"),
)


class StageFailed(RuntimeError):
    """A notebook failed; ``str()`` names the stage, the cell and the error."""


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root`` (relative posix paths)."""
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def stage_code(notebook: Path) -> dict[str, str]:
    """sha256 of every file of the code a notebook runs: the ``cgcnn`` modules it imports,
    their parent packages and everything they import (inside functions too), and the package
    data those modules read (``cgcnn.provenance.modules_used``)."""
    from cgcnn.provenance import code_files, modules_used, notebook_imports

    return code_files(modules_used(notebook_imports(notebook)))


def _stage_settings(stage: Stage, settings: dict) -> dict:
    if stage.settings is None:
        return settings
    return {k: settings[k] for k in stage.settings if k in settings}


def _changed_keys(old, new, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-like dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def _why(old: dict | None, inputs: dict, run_dir: Path) -> str | None:
    """Why a stage must run (None: it may be skipped)."""
    if old is None:
        return "not run yet"
    if old.get("status") != "completed":
        return "its last run " + ("failed" if old.get("status") == "failed" else "did not finish")
    before = old.get("inputs", {})
    if before.get("notebook_sha256") != inputs["notebook_sha256"]:
        return "notebook changed"
    code = _changed_keys(before.get("code", {}), inputs["code"])
    if code:
        return "code changed: " + _shorten(code)
    params = _changed_keys(before.get("parameters", {}), inputs["parameters"])
    if params:
        return "parameters changed: " + _shorten(params)
    settings = _changed_keys(before.get("settings", {}), inputs["settings"])
    if settings:
        return "settings changed: " + _shorten(settings)
    files = _changed_keys(before.get("files", {}), inputs["files"])
    if files:
        return "input files changed: " + _shorten(files)
    upstream = _changed_keys(before.get("upstream", {}), inputs["upstream"])
    if upstream:
        return "outputs of an earlier stage changed: " + _shorten(upstream)
    missing = _missing_outputs(run_dir, old.get("outputs", {}))
    if missing:
        return "outputs missing or changed: " + _shorten(missing)
    return None


def _shorten(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def _file_states(run_dir: Path) -> dict[str, tuple[int, int]]:
    states = {}
    for p in run_dir.rglob("*"):
        if not p.is_file():
            continue
        rel = p.relative_to(run_dir).as_posix()
        if rel.startswith(_NOT_OUTPUTS) or rel in _NOT_OUTPUTS:
            continue
        st = p.stat()
        states[rel] = (st.st_size, st.st_mtime_ns)
    return states


def _missing_outputs(run_dir: Path, outputs: dict) -> list[str]:
    """Outputs of a stage that are gone or whose content changed since it wrote them."""
    missing = []
    for rel, rec in outputs.items():
        p = run_dir / rel
        if not p.is_file():
            missing.append(rel)
            continue
        st = p.stat()
        if (st.st_size, st.st_mtime_ns) != (rec["size"], rec["mtime_ns"]) and sha256_file(p) != rec["sha256"]:
            missing.append(rel)
    return missing


def _written_outside(run_dir: Path, old: dict | None) -> list[str]:
    """Outputs of a stage's last completed run that are still there with other content: written
    outside the runner since (a notebook run by hand in the run folder, an edit)."""
    if not old or old.get("status") != "completed":
        return []
    return [rel for rel in _missing_outputs(run_dir, old.get("outputs", {})) if (run_dir / rel).is_file()]


def redact_secrets(path: Path, environ: dict | None = None) -> int:
    """Replace the values of secret environment variables in a text file by ``***``.

    Returns the number of replacements (a safety net: notebooks must never print secrets).
    """
    env = os.environ if environ is None else environ
    secrets = [env[k] for k in SECRET_VARIABLES if len(env.get(k, "")) >= 8]
    if not secrets or not path.is_file():
        return 0
    text = path.read_text(encoding="utf-8")
    count = sum(text.count(s) for s in secrets)
    if count:
        for s in secrets:
            text = text.replace(s, "***")
        atomic_write_text(path, text)
    return count


def environment_info() -> dict:
    """Package versions, git SHA, Python, platform, CPU and CUDA of this machine."""
    import torch  # noqa: F401  (loaded so that the CUDA / GPU fields are filled)

    from cgcnn.provenance import collect

    return collect(REPO)


# --------------------------------------------------------------------------------------
# the runner
# --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="run_pipeline.py",
        description="Run the study's notebooks in order with papermill into <output>/<run-id>/.",
    )
    ap.add_argument(
        "--profile",
        default="fixture",
        help="fixture | default | study | ship | paper, or a profile JSON file (default: fixture)",
    )
    ap.add_argument(
        "--bucket",
        default=str(DEFAULT_BUCKET),
        help="raw-data bucket: a local folder holding raw/ or s3://bucket[/prefix] (default: the bundled fixture)",
    )
    ap.add_argument(
        "--materials",
        default=DEFAULT_MATERIALS,
        help="structures + PBE gaps: snapshot:PATH (summary.jsonl.gz) or mp (Materials Project API, needs MP_API_KEY)",
    )
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="torch device (default: auto)")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds, overriding the profile's (e.g. 0,1,2)")
    ap.add_argument("--workers", type=int, default=None, help="graph-building processes (default: the profile's)")
    ap.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="processes for training M1 with DDP (torch.distributed.run; "
        "on CUDA one GPU each; default: the profile's, 1)",
    )
    ap.add_argument("--output", default="runs", help="folder that receives run folders (default: ./runs)")
    ap.add_argument(
        "--run-id", default=None, help="name of the run folder (default: <profile>-<hash of settings and inputs>)"
    )
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change one setting of the profile: a dotted key and a JSON value, e.g. adapt.lr_grid=[0.001,0.003] "
        "or cv.folds=3 (repeatable; recorded in config.json and part of the default run id)",
    )
    ap.add_argument(
        "--cache",
        default=None,
        help="folder of the fit cache shared by runs (default: <output>/.cache): every fit is stored there once "
        "and read back by any run whose settings leave it unchanged",
    )
    ap.add_argument("--force", action="store_true", help="run every stage even when its inputs are unchanged")
    where = ap.add_mutually_exclusive_group()
    where.add_argument(
        "--from",
        dest="start",
        metavar="STAGE",
        default=None,
        help="run this stage and every later one (name or number; earlier stages must have run)",
    )
    where.add_argument(
        "--only",
        metavar="STAGE",
        default=None,
        help="run just this stage (name or number; earlier stages must have run)",
    )
    return ap.parse_args(argv)


def stage_index(stages: tuple[Stage, ...], text: str) -> int:
    """Position of a stage given by name (``report``) or number (``8``, counting from 1)."""
    names = [s.name for s in stages]
    if text in names:
        return names.index(text)
    if text.isdigit() and 1 <= int(text) <= len(stages):
        return int(text) - 1
    raise SystemExit(f"error: no stage {text!r}; stages: " + ", ".join(f"{k + 1} {n}" for k, n in enumerate(names)))


def _parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise SystemExit(f"error: --seeds must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise SystemExit("error: --seeds is empty")
    return seeds


def _resolve_materials(text: str) -> str:
    if text == "mp":
        if not os.environ.get("MP_API_KEY"):
            raise SystemExit(
                "error: --materials mp needs the MP_API_KEY environment variable (a Materials Project API key)"
            )
        return "mp"
    if text.startswith("snapshot:"):
        path = Path(text[len("snapshot:") :]).expanduser().resolve()
        if not path.is_file():
            raise SystemExit(f"error: --materials {text}: no such snapshot file {path}")
        return f"snapshot:{path}"
    raise SystemExit(f"error: --materials must be 'snapshot:PATH' or 'mp', got {text!r}")


class Pipeline:
    """The run folder and its stages; :meth:`run` executes them."""

    def __init__(self, args: argparse.Namespace, stages: tuple[Stage, ...] = STAGES, *, echo=print):
        from cgcnn.study.data_preparation import bucket_location, is_remote, work_bucket
        from cgcnn.study.profiles import load_profile

        self.args = args
        self.stages = stages
        self.echo = echo
        seeds = _parse_seeds(args.seeds)
        if args.nproc is not None and args.nproc < 1:
            raise SystemExit(f"error: --nproc must be at least 1, got {args.nproc}")
        from cgcnn.study.profiles import parse_assignment

        self.overrides = dict(parse_assignment(text) for text in getattr(args, "overrides", []) or [])
        self.profile = load_profile(
            args.profile,
            seeds=seeds,
            device=args.device,
            workers=args.workers,
            nproc=args.nproc,
            overrides=self.overrides,
        )
        self.first, self.last = 0, len(stages) - 1  # the stages this call may run
        if getattr(args, "start", None):
            self.first = stage_index(stages, args.start)
        if getattr(args, "only", None):
            self.first = self.last = stage_index(stages, args.only)
        if args.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise SystemExit(
                    "error: --device cuda: CUDA is not available here (torch "
                    f"{torch.__version__}); use --device auto or cpu"
                )
        self.materials = _resolve_materials(args.materials)
        self.source = bucket_location(args.bucket)
        if not is_remote(self.source) and not (Path(self.source) / "raw").is_dir():
            raise SystemExit(f"error: --bucket {args.bucket}: no raw/ folder in {self.source}")
        settings = self.profile.to_dict()
        run_id = args.run_id or f"{self.profile.name}-{_sha256_json([settings, self.source, self.materials])[:10]}"
        self.run_dir = Path(args.output).expanduser().resolve() / run_id
        self.run_id = run_id
        self.work_bucket = work_bucket(self.run_dir, self.source, copy=False)  # named now, filled by prepare_bucket
        cache = getattr(args, "cache", None)  # the fit cache (cgcnn.study.fits); default <output>/.cache
        self.cache = str(Path(cache).expanduser().resolve()) if cache else None

    # -- files of the run folder ---------------------------------------------------------
    def write_run_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = {
            "run_id": self.run_id,
            "profile": self.profile.name,
            "settings": self.profile.to_dict(),
            "overrides": self.overrides,
            "inputs": {
                "bucket": self.source,
                "work_bucket": self._in_run(self.work_bucket),
                "materials": self.materials,
            },
        }
        if self.cache is not None:
            config["cache"] = self.cache
        path = self.run_dir / "config.json"
        if _read_json(path) != config:
            write_json(path, config)
        write_json(self.run_dir / "environment.json", environment_info())

    def prepare_bucket(self) -> None:
        """Copy local raw inputs into the run's own work bucket (never write under the source)."""
        from cgcnn.study.data_preparation import work_bucket

        self.work_bucket = work_bucket(self.run_dir, self.source)

    def input_files(self) -> dict[str, str]:
        """Digests of the raw inputs the ETL reads (local ones; remote ones by URI)."""
        from cgcnn.study.data_preparation import is_remote

        files: dict[str, str] = {}
        if is_remote(self.source):
            files["bucket"] = self.source
        else:
            raw = Path(self.source) / "raw"
            files.update({f"bucket/raw/{k}": v for k, v in _tree_digest(raw).items()})
        if self.materials.startswith("snapshot:"):
            files["materials"] = sha256_file(Path(self.materials[len("snapshot:") :]))
        else:
            files["materials"] = self.materials
        return files

    def _in_run(self, location: str) -> str:
        """A path inside the run folder relative to it (``bucket``); anything else as it is."""
        path = Path(location)
        if path.is_absolute() and (path == self.run_dir or self.run_dir in path.parents):
            return path.relative_to(self.run_dir).as_posix() or "."
        return location

    def stage_parameters(self, stage: Stage) -> dict:
        """The notebook's parameters.  Paths inside the run folder are relative to it (the
        notebooks run there), so a run folder moved or copied elsewhere is up to date there."""
        known = {
            "run_dir": ".",
            "config": "config.json",
            "bucket": self._in_run(self.work_bucket),
            "materials": self.materials,
            "workers": self.profile.workers,
        }
        return {k: known[k] for k in stage.params if k in known}

    def manifest_path(self, index: int, stage: Stage) -> Path:
        return self.run_dir / "stages" / f"{index + 1:02d}-{stage.name}.json"

    def executed_path(self, stage: Stage) -> Path:
        return self.run_dir / "notebooks" / stage.relpath

    # -- running -----------------------------------------------------------------------
    def run(self) -> int:
        """Execute (or skip) every stage in order, holding the run folder's lock (a second
        runner on the same folder is refused at once). Returns 0, or 1 when a stage failed."""
        from cgcnn.lock import RunLock

        with RunLock(self.run_dir, what="run folder"):
            return self._run_stages()

    def _run_stages(self) -> int:
        self._check_earlier_stages()
        self.write_run_files()
        self.prepare_bucket()
        self.point_latest()
        self.echo(f"run folder: {self.run_dir}")
        settings, files = self.profile.to_dict(), self.input_files()
        upstream: dict[str, str] = {}
        total = time.perf_counter()
        for index, stage in enumerate(self.stages):
            label = f"[{index + 1}/{len(self.stages)}] {stage.relpath}"
            mpath = self.manifest_path(index, stage)
            old = _read_json(mpath)
            if index > self.last:
                break
            if index < self.first:  # --from / --only: earlier stages are used as they are
                upstream[stage.name] = old["outputs_digest"]
                self.echo(f"{label}: not run (starting at stage {self.first + 1})")
                continue
            params = self.stage_parameters(stage)
            inputs = {
                "code": stage_code(stage.notebook),
                "settings": _stage_settings(stage, settings),
                "files": files,
                "parameters": params,
                "notebook_sha256": sha256_file(stage.notebook),
                "upstream": dict(upstream),
            }
            digest = _sha256_json(inputs)
            if self.args.force:
                why = "forced (--force)"
            elif getattr(self.args, "only", None):
                why = "asked for (--only)"
            elif getattr(self.args, "start", None):
                why = f"asked for (--from {self.stages[self.first].name})"
            else:
                why = _why(old, inputs, self.run_dir)
            if why is None:
                self.echo(f"{label}: skipped (inputs unchanged)")
                upstream[stage.name] = old["outputs_digest"]
                continue
            self.echo(f"{label}: runs: {why}")
            outside = _written_outside(self.run_dir, old)
            if outside:  # a notebook run by hand (papermill -p ...) is about to be undone: say so
                self.echo(
                    f"{label}: replaces {len(outside)} output(s) written outside the runner since its last run "
                    f"({_shorten(outside)}), e.g. by the notebook run by hand; to keep a changed setting, give it "
                    "to the runner (--set KEY=VALUE) or copy those files elsewhere first"
                )
            try:
                manifest = self._execute(stage, params, inputs, digest, mpath, label)
            except StageFailed as exc:
                self.echo(str(exc))
                return 1
            upstream[stage.name] = manifest["outputs_digest"]
        self.echo(f"done in {time.perf_counter() - total:.1f} s: {self.run_dir}")
        self.echo_next_steps()
        return 0

    def point_latest(self) -> None:
        """Point ``<output>/latest`` at this run folder (a relative symlink, replaced atomically);
        a run folder named ``latest`` is never replaced, and a file system without symlinks
        gets a note instead."""
        link = self.run_dir.parent / LATEST
        if self.run_dir.name == LATEST or (link.exists() and not link.is_symlink()):
            return
        tmp = link.with_name(f".{LATEST}.{os.getpid()}")
        try:
            if tmp.is_symlink():
                tmp.unlink()
            tmp.symlink_to(self.run_dir.name, target_is_directory=True)
            os.replace(tmp, link)
        except OSError as exc:
            self.echo(
                f"note: {link} could not be pointed at this run ({exc}); give the notebooks run_dir={self.run_dir}"
            )

    def echo_next_steps(self) -> None:
        """Where to look next: the run's report (with a word on a fixture run's numbers) and the
        notebooks' way to this run."""
        report = self.run_dir / "report.md"
        if report.is_file():
            fixture = self.profile.name == "fixture" or Path(self.source) == DEFAULT_BUCKET
            note = " (a fixture run: its numbers only show that every step runs; they mean nothing)"
            self.echo(f"report: {report}" + (note if fixture else ""))
        if self.run_dir.parent == (REPO / "runs").resolve() and (self.run_dir.parent / LATEST).is_symlink():
            self.echo(
                "notebooks: `.venv/bin/jupyter lab`, then open any of 01-data-preparation/, 02-ml-dev/, 03-insights/: "
                f"their default run_dir, runs/{LATEST}, is this run"
            )
        else:
            self.echo(f"notebooks: give them run_dir={self.run_dir} and config={self.run_dir / 'config.json'}")

    def _check_earlier_stages(self) -> None:
        """With --from / --only, every earlier stage must have completed and left its outputs."""
        for index, stage in enumerate(self.stages[: self.first]):
            old = _read_json(self.manifest_path(index, stage))
            if old is None or old.get("status") != "completed":
                raise SystemExit(
                    f"error: stage {index + 1} ({stage.name}) has not completed in {self.run_dir}; "
                    f"run it first (drop --from / --only, or start at --from {stage.name})"
                )
            missing = _missing_outputs(self.run_dir, old.get("outputs", {}))
            if missing:
                raise SystemExit(
                    f"error: outputs of stage {index + 1} ({stage.name}) are missing or changed ({_shorten(missing)}); "
                    f"run it again (--from {stage.name})"
                )

    def _execute(self, stage: Stage, params: dict, inputs: dict, digest: str, mpath: Path, label: str) -> dict:
        import papermill as pm
        from papermill.exceptions import PapermillExecutionError

        out_nb = self.executed_path(stage)
        out_nb.parent.mkdir(parents=True, exist_ok=True)
        before = _file_states(self.run_dir)
        earlier = (_read_json(mpath) or {}).get("outputs", {})  # what this stage wrote last time
        manifest = {
            "stage": stage.name,
            "notebook": stage.relpath,
            "executed_notebook": out_nb.relative_to(self.run_dir).as_posix(),
            "status": "running",
            "input_digest": digest,
            "inputs": inputs,
            "started": _now(),
        }
        write_json(mpath, manifest)
        t0 = time.perf_counter()
        error: dict | None = None
        try:
            pm.execute_notebook(
                str(stage.notebook),
                str(out_nb),
                parameters=params,
                kernel_name="python3",
                cwd=str(self.run_dir),
                progress_bar=False,
                log_output=False,
                extra_arguments=["--IPKernelApp.log_level=CRITICAL"],  # no kernel start-up chatter
            )
        except PapermillExecutionError as exc:
            first = next((ln for ln in (exc.source or "").splitlines() if ln.strip()), "")
            error = {
                "cell_index": exc.cell_index,
                "execution_count": exc.exec_count,
                "source": exc.source,
                "ename": exc.ename,
                "evalue": exc.evalue,
            }
            message = (
                f"{label}: FAILED in cell {exc.cell_index} (execution count {exc.exec_count}) of "
                f"{stage.relpath}: {exc.ename}: {exc.evalue}\n"
                f"    cell starts with: {first}\n"
                f"    executed notebook (with the traceback): {out_nb}"
            )
        except Exception as exc:  # kernel died, notebook missing, …
            error = {"ename": type(exc).__name__, "evalue": str(exc)}
            message = f"{label}: FAILED before or outside a cell of {stage.relpath}: {type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - t0
        if redact_secrets(out_nb):
            self.echo(f"{label}: secret values found in the executed notebook were replaced by ***")
        after = _file_states(self.run_dir)
        # The stage's outputs: what it wrote now, and what it wrote last time and left in place
        # (a fit read back from the cache, a graph file it reused), so that the same inputs give
        # the same set of outputs and the same digest, whichever files this run touched.
        changed = sorted({k for k, v in after.items() if before.get(k) != v} | (set(earlier) & set(after)))
        outputs = {
            rel: {"sha256": sha256_file(self.run_dir / rel), "size": after[rel][0], "mtime_ns": after[rel][1]}
            for rel in changed
        }
        manifest.update(
            status="failed" if error else "completed",
            finished=_now(),
            seconds=round(seconds, 2),
            outputs=outputs,
            outputs_digest=_sha256_json({k: v["sha256"] for k, v in outputs.items() if k not in _RECORDS}),
        )
        if error:
            manifest["error"] = error
        write_json(mpath, manifest)
        if error:
            raise StageFailed(message)
        self.echo(f"{label}: done in {seconds:.1f} s")
        return manifest


def main(argv: list[str] | None = None, stages: tuple[Stage, ...] = STAGES) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("papermill").setLevel(logging.ERROR)
    args = parse_args(argv)
    try:
        return Pipeline(args, stages).run()
    except Exception as exc:  # expected failures (bad profile, busy run folder, …) are one line
        from cgcnn.cli import debugging, error_line

        line = error_line(exc)
        if line is None or debugging():
            raise
        raise SystemExit(line) from None


if __name__ == "__main__":
    sys.exit(main())
