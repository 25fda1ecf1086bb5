"""cgcnn.fileio: atomic writes leave nothing half-made, and clean up after killed writers."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from cgcnn.fileio import atomic_write_bytes, clean_stale_temps, write_json


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_writers_temporary_file_is_removed_when_the_folder_is_next_written(tmp_path):
    old = time.time() - 3600
    stale = tmp_path / f".model.pt.{_dead_pid()}.k3j2.tmp"
    live = tmp_path / f".other.pt.{os.getpid()}.a1b2.tmp"  # a writer still running
    young = tmp_path / f".fresh.pt.{_dead_pid()}.zz.tmp"  # too recent to judge
    for f in (stale, live, young):
        f.write_bytes(b"partial")
    os.utime(stale, (old, old))
    os.utime(live, (old, old))
    atomic_write_bytes(tmp_path / "model.pt", b"complete")
    assert not stale.exists() and live.exists() and young.exists()
    assert (tmp_path / "model.pt").read_bytes() == b"complete"
    assert clean_stale_temps(tmp_path) == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"x": 1})
    with pytest.raises(TypeError):
        write_json(target, {"x": object()})
    assert target.read_text().strip().startswith("{") and '"x": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
