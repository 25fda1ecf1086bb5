"""``scripts/run_pipeline.py`` loaded once as a module (it is a script, not part of the package)."""

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load_runner():
    spec = importlib.util.spec_from_file_location("run_pipeline", REPO / "scripts" / "run_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


rp = sys.modules.get("run_pipeline") or _load_runner()
