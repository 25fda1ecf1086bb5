"""Safe file writing and hashing.

One job: write files so that a reader sees the old content or the new, never a partial
file, and hash files and JSON-able objects the same way everywhere.

* :func:`atomic_write_bytes` / :func:`atomic_write_text` write through a temporary file in
  the target folder and an ``os.replace`` (atomic on one file system).  The file gets the
  usual mode (``0666`` less the umask), not the ``0600`` of a bare temporary file.
* :func:`atomic_path` is the same for writers that want a path (``fig.savefig(tmp)``).
* :func:`sha256_file` hashes a file in 1 MiB blocks.
* :func:`json_safe` turns an object into one ``json.dumps(..., allow_nan=False)`` accepts.
* :func:`write_json` writes such an object atomically (indent 2, trailing newline).

Only the standard library is imported here, so scripts can use this module cheaply.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "json_safe", "sha256_file", "write_json"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_TEMP = re.compile(r"^\..+\.(?P<pid>\d+)\.[^.]+\.tmp$")
STALE_AFTER_S = 300.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_temps(folder: str | os.PathLike, *, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove temporary files of our own pattern (``.<name>.<pid>.<random>.tmp``) left in
    ``folder`` by a writer that was killed: its process is gone and the file is older than
    ``older_than_s``.  Returns what was removed."""
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.match(entry.name)
        if not m or not entry.is_file(follow_symlinks=False):
            continue
        try:
            if now - entry.stat().st_mtime > older_than_s and not _alive(int(m["pid"])):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    The parent folder is created.  If the block raises, the temporary file is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename.

    ``fsync=True`` also flushes the data to disk before the rename.  Returns ``path``.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
    return path


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write_bytes` for text (no newline translation).  Returns ``path``."""
    return atomic_write_bytes(path, text.encode(encoding))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_safe(obj: Any) -> Any:
    """Recursively make ``obj`` JSON-safe.

    Dict keys become ``str``, tuples become lists, numpy scalars become Python ones, and
    NaN/inf floats, ``pd.NA`` and ``pd.NaT`` become ``None``.
    """
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):  # numpy scalar
        try:
            obj = obj.item()
        except (TypeError, ValueError):
            pass
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    pd = sys.modules.get("pandas")  # if pandas was never imported, obj is none of its markers
    if pd is not None and (obj is pd.NA or obj is pd.NaT):
        return None
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (indent 2, trailing newline).

    The object goes through :func:`json_safe` first: NaN/inf become ``null``, numpy scalars
    plain numbers.  Returns ``path``.
    """
    text = json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n"
    return atomic_write_bytes(Path(path), text.encode())
