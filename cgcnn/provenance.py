"""What produced a run: package versions, git SHA, machine — written beside every output.

:func:`collect` is the one collector: the pipeline runner writes it as ``environment.json``,
``fit`` into ``run.json``, the ETL into its report.
"""

from __future__ import annotations

import ast
import datetime as _dt
import hashlib
import importlib.metadata as md
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

PACKAGES = (
    "cgcnn-da",
    "torch",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "matminer",
    "pymatgen",
    "mp-api",
    "boto3",
    "pydantic",
    "openTSNE",
    "matplotlib",
    "papermill",
    "ipykernel",
    "nbformat",
    "openpyxl",
)


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    """Installed version of every package in ``names`` (None when absent)."""
    out = {}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    return out


def git_sha(repo: str | Path | None = None) -> str | None:
    """The checkout's commit (with ``-dirty`` when it has uncommitted changes), or None."""
    where = Path(repo) if repo else Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _torch_info() -> dict:
    if "torch" not in sys.modules:  # never import torch just to describe the machine
        return {}
    import torch

    cuda = torch.cuda.is_available()
    return {
        "cuda_available": cuda,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "torch_threads": torch.get_num_threads(),
    }


def collect(repo: str | Path | None = None) -> dict:
    """Versions, git SHA, Python, platform, CPU count and (when torch is loaded) CUDA / GPU."""
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git_sha(repo),
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": package_versions(),
        **_torch_info(),
    }


# --------------------------------------------------------------------------------------
# which code a piece of work ran: the cgcnn modules it imports, transitively
# --------------------------------------------------------------------------------------
PACKAGE_ROOT = Path(__file__).resolve().parent
# Package data read at run time, by the module that reads it (a change to these files is a
# change to that module's behaviour).
PACKAGE_DATA = {"cgcnn.study.profiles": ("profiles",), "cgcnn.prediction.shipped": ("models",)}


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(tree: ast.AST) -> set[str]:
    """Every dotted name an ``import`` statement anywhere in ``tree`` names (functions
    included); ``from a import b`` gives both ``a`` and ``a.b`` (b may be a module)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def module_files(root: Path = PACKAGE_ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    return {_module_name(p, root): p for p in sorted(root.rglob("*.py")) if "__pycache__" not in p.parts}


def lazy_names(tree: ast.AST) -> dict[str, str]:
    """A package's names imported on first use: its module-level ``_API = {name: module}``
    table (PEP 562 ``__getattr__``), or ``{}``."""
    for node in getattr(tree, "body", []):
        if (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["_API"]
            and isinstance(node.value, ast.Dict)
        ):
            return {
                k.value: v.value
                for k, v in zip(node.value.keys, node.value.values)
                if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)
            }
    return {}


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


def import_graph(root: Path = PACKAGE_ROOT, *, parents: bool = False) -> dict[str, set[str]]:
    """Module -> the package's modules its imports run, anywhere in its body (functions included).

    Importing ``a.b.c`` runs the ``__init__`` of ``a`` and ``a.b`` first, so those count too
    (except the importer's own packages, which are already running when it runs); ``from pkg
    import name`` of a name the package imports on first use (:func:`lazy_names`) counts the
    module it comes from.  ``parents=True`` also links every module to its own parent
    packages: what importing it *runs* (leave it off to look for cycles).
    """
    modules = module_files(root)
    trees = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in modules.items()}
    lazy = {name: lazy_names(tree) for name, tree in trees.items()}
    graph: dict[str, set[str]] = {}
    for name, tree in trees.items():
        targets: set[str] = set()
        for t in imported_names(tree):
            package, _, attr = t.rpartition(".")
            if t in modules:
                targets.add(t)
            elif attr in lazy.get(package, {}):
                targets.add(lazy[package][attr])
        targets |= {a for t in list(targets) for a in _ancestors(t)}
        own = set(_ancestors(name))
        targets = targets if parents else targets - own
        graph[name] = {t for t in targets if t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def notebook_imports(path: str | Path) -> set[str]:
    """Dotted names imported by the code cells of a notebook (IPython magics and shell lines skipped)."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    names: set[str] = set()
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        source = "".join(cell.get("source", ""))
        code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        try:
            names |= imported_names(ast.parse(code))
        except SyntaxError:  # a cell that does not parse: it fails when run; count no import
            continue
    return names


def modules_used(names: set[str], root: Path = PACKAGE_ROOT) -> list[str]:
    """The package's modules that importing ``names`` runs: those named, their parent packages
    and, transitively, everything they import (inside functions too)."""
    graph = import_graph(root, parents=True)
    todo = [n for n in names if n in graph]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(graph[name] - seen)
    return sorted(seen)


def code_files(modules: list[str], root: Path = PACKAGE_ROOT) -> dict[str, str]:
    """sha256 of every file behind ``modules`` (their sources and the package data they read),
    keyed by the path relative to the repository (``cgcnn/study/report.py``)."""
    files = module_files(root)
    out: dict[str, str] = {}
    for name in modules:
        paths = [files[name]]
        for folder in PACKAGE_DATA.get(name, ()):
            paths += [p for p in sorted((root / folder).rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
        for p in paths:
            out[p.relative_to(root.parent).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return dict(sorted(out.items()))
