"""Errors and skipped items shared by every step of the data flow.

Every error a user can cause (a bad file, a bad id, a bad column, bad settings) derives from
:class:`CgcnnError` and carries one line that names the item; the command line prints that
line and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OnError = Literal["skip", "error"]


class CgcnnError(Exception):
    """An expected failure caused by the input: its message names the item and what to do."""


class DatasetError(CgcnnError, ValueError):
    """Bad input that names the offending item."""


class InputWarning(UserWarning):
    """A remark about the input of a call that goes on (e.g. given PBE gaps that name no
    input structure, or structures that were skipped): the Python counterpart of the
    ``warning: ...`` lines the command line prints."""


@dataclass(frozen=True)
class Problem:
    """An item that was skipped, and why (``kind="skipped"``), or a remark about an item that
    was kept (``kind="warning"``: e.g. what the CIF parser said about the file)."""

    item_id: str
    reason: str
    kind: Literal["skipped", "warning"] = "skipped"

    def __str__(self) -> str:
        return f"{self.item_id}: {self.reason}"
