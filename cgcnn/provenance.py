"""What produced a run: package versions, git SHA, machine — written beside every output.

:func:`collect` is the one collector: the pipeline runner writes it as ``environment.json``,
``fit`` into ``run.json``, the ETL into its report.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import os
import platform
import subprocess
import sys
from pathlib import Path

PACKAGES = (
    "cgcnn-da", "torch", "numpy", "pandas", "scipy", "scikit-learn", "matminer", "pymatgen", "mp-api",
    "boto3", "pydantic", "openTSNE", "matplotlib", "papermill", "ipykernel", "nbformat", "openpyxl",
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
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True, timeout=10)
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
