"""Experimental labels that look wrong: sources that disagree, a gap far below its PBE gap.

The ETL writes these to its drop report (:mod:`cgcnn.etl.audit`) and the trust step adds the
out-of-fold errors beyond the interval (:mod:`cgcnn.study.trust`); both read the test here, so
the study's later steps need nothing of the ETL.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["SUSPICIOUS_COLUMNS", "suspicious_labels"]


SUSPICIOUS_COLUMNS = ["material_id", "formula", "bg_exp", "bg_exp_source", "bg_pbe", "reasons"]


def suspicious_labels(ds2: pd.DataFrame, conflicts: pd.DataFrame, below_pbe_ev: float) -> pd.DataFrame:
    """DS2 rows whose experimental label looks wrong, with why (``"; "``-separated): its
    sources disagree by more than the conflict threshold (``conflicts``), or it lies more than
    ``below_pbe_ev`` below the material's PBE gap."""
    disagree = {}
    if len(conflicts):
        for _, c in conflicts.iterrows():
            values = {k.removeprefix("bg_exp_"): v for k, v in c.items() if k.startswith("bg_exp_") and pd.notna(v)}
            disagree[str(c["material_id"])] = "sources disagree: " + ", ".join(
                f"{k} {float(v):.2f}" for k, v in values.items()
            )
    rows = []
    for _, r in ds2.iterrows():
        why = [disagree[r["material_id"]]] if r["material_id"] in disagree else []
        pbe, exp = (pd.to_numeric(r.get(c), errors="coerce") for c in ("bg_pbe", "bg_exp"))
        if pd.notna(pbe) and pd.notna(exp) and exp < pbe - below_pbe_ev:
            why.append(f"{pbe - exp:.2f} eV below its PBE gap ({pbe:.2f})")
        if why:
            rows.append({**{c: r.get(c) for c in SUSPICIOUS_COLUMNS[:-1]}, "reasons": "; ".join(why)})
    return pd.DataFrame(rows, columns=SUSPICIOUS_COLUMNS)
