#!/usr/bin/env python3
"""Copy a run's report into the repository: ``reports/<run-name>/``.

    .venv/bin/python scripts/publish_report.py /work/runs/ship-1 [--dest reports]

Copies ``report.md`` (unchanged: it already names the profile and the code's git SHA), the
figures it shows, the tables it was written from (CV, DS3, methods) and the run's
records (config, environment, CV, methods, trust, DS3 metrics: ``cgcnn.study.rundir.RUN_FILES``),
so that the committed report can be checked against its sources.  Nothing is edited by hand.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

from cgcnn.study.rundir import RUN_FILES

REPO = Path(__file__).resolve().parents[1]
# The run's records (cgcnn.study.rundir.RUN_FILES) that sit at the top of the run folder.
FILES = tuple(f.path for f in RUN_FILES.values() if "/" not in f.path)
TABLES = (
    "cv_metrics.csv",
    "methods_cv_metrics.csv",
    "ds3_metrics.csv",
    "ds3_metrics_without_ds2_polymorphs.csv",
    "ds3_predictions.csv",
    "ds3_errors_by_class.csv",
    "ds3_errors_by_gap.csv",
    "methods_calibration.csv",
    "methods_backbones.csv",
    "trust_coverage.csv",
    "trust_coverage_backbone.csv",
    "trust_coverage_by_class.csv",
    "trust_conditioning.csv",
    "trust_domain.csv",
    "suspicious_labels.csv",
    "m1_ds1_metrics.csv",
    "etl_counts.csv",
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a finished pipeline run folder (holding report.md)")
    p.add_argument("--dest", default=str(REPO / "reports"))
    args = p.parse_args(argv)
    run = Path(args.run)
    report = run / "report.md"
    if not report.is_file():
        raise SystemExit(
            f"error: {report} not found: run the pipeline's report stage (03-insights/02-report.ipynb) first"
        )
    out = Path(args.dest) / run.name
    shutil.rmtree(out, ignore_errors=True)
    (out / "tables").mkdir(parents=True)
    for name in FILES:
        if (run / name).is_file():
            shutil.copyfile(run / name, out / name)
    for name in TABLES:
        if (run / "tables" / name).is_file():
            shutil.copyfile(run / "tables" / name, out / "tables" / name)
    for rel in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text()):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run / rel, out / rel)
    print(f"report of {run.name} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
