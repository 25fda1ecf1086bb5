"""An exclusive lock on a run folder, so that two runs never write into the same one.

``with RunLock(folder): ...`` takes ``folder/.lock`` with ``fcntl.flock``: the kernel drops
the lock when the holder exits, however it exits (``kill -9`` included), so a lock left by
a dead process is simply taken over.  The file records the holder's pid, host and start
time, which the refusal message of a second run names.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import socket
from pathlib import Path

from cgcnn.errors import CgcnnError

LOCK_NAME = ".lock"


class LockedError(CgcnnError):
    """Another live process holds the run folder."""


class RunLock:
    """Exclusive, non-blocking lock on ``folder`` (created if needed)."""

    def __init__(self, folder: str | os.PathLike, *, what: str = "run folder"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise LockedError(
                f"{self.what} {self.folder} is in use by pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
                f"since {holder.get('started', '?')}; wait for it to finish or use another folder"
            ) from None
        os.ftruncate(fd, 0)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        os.write(fd, json.dumps(info).encode())
        self._fd = fd
        return self

    @staticmethod
    def _holder(fd: int) -> dict:
        try:
            return json.loads(os.pread(fd, 4096, 0) or b"{}")
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
