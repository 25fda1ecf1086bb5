"""Pick benchmark structures from a snapshot (summary.jsonl.gz): the first N, or N spread evenly."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np


def _lines(path: Path):
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        yield from fh


def select_records(path: Path, n: int, how: str = "spread", labelled: bool = False) -> list[dict]:
    """``n`` snapshot records, in file order.

    how: ``"first"`` takes the first ``n`` eligible lines; ``"spread"`` takes ``n`` eligible
    lines evenly spaced over the file (deterministic), which represents the size mix of the
    whole snapshot better than its first lines.  labelled: only records with a band gap.
    Streams the file twice and keeps only the chosen records, so the memory it leaves behind
    does not inflate the benchmarks' peak RSS.
    """
    if how not in ("spread", "first"):
        raise ValueError(f"unknown selection {how!r}")
    eligible = [k for k, line in enumerate(_lines(path)) if not labelled or json.loads(line)["band_gap"] is not None]
    if how == "first" or n >= len(eligible):
        picks = set(eligible[:n])
    else:
        picks = {eligible[k] for k in np.unique(np.linspace(0, len(eligible) - 1, n).round().astype(int))}
    return [json.loads(line) for k, line in enumerate(_lines(path)) if k in picks]
