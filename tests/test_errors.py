"""Bad input and faults on the command line: one line `error: …` naming the item, a non-zero
exit, no traceback, nothing half-made left behind; strict labels; run-folder locks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from pymatgen.io.cif import CifWriter

from cgcnn.data.dataset import CrystalDataset, parse_targets
from cgcnn.errors import DatasetError
from cgcnn.lock import LockedError, RunLock

TINY = ["--radius", "4", "--max-neighbors", "12"]
TRAIN = ["--epochs", "1", "--batch-size", "6", "--optimizer", "adam", "--lr", "0.01", "--seed", "0", "--device", "cpu"]


def cgcnn(*argv, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cgcnn", *map(str, argv)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def assert_one_line_error(proc, *fragments) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr
    for f in fragments:
        assert f in last, (f, last)
    return last


@pytest.fixture(scope="module")
def files(tiny_items, tiny_targets, tiny_features, tiny_model_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("errors")
    cifs = root / "cifs"
    cifs.mkdir()
    for m, s in tiny_items[:12]:
        (cifs / f"{m}.cif").write_text(str(CifWriter(s)))
    (root / "bad").mkdir()
    (root / "bad" / "broken.cif").write_text("data_broken\n_cell_length_a 4.0\nnot a CIF\n")
    pd.DataFrame({"material_id": list(tiny_targets), "target": list(tiny_targets.values())}).to_csv(
        root / "targets.csv", index=False
    )
    tiny_features.to_json(root / "features.json")
    (root / "model.json").write_text(json.dumps(tiny_model_config.to_dict()))
    return root


def train_args(files, targets, out):
    return [
        "train",
        "--graphs",
        files / "cifs",
        "--targets",
        targets,
        "--atom-features",
        files / "features.json",
        "--model-config",
        files / "model.json",
        "--output",
        out,
        *TINY,
        *TRAIN,
    ]


@pytest.fixture(scope="module")
def trained(files):
    out = files / "run"
    assert cgcnn(*train_args(files, files / "targets.csv", out)).returncode == 0
    return out


# -- 1. one line instead of a traceback ------------------------------------------------------
def test_graphs_on_error_error_names_the_cif_and_leaves_no_folder(files, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "broken.cif").write_text((files / "bad" / "broken.cif").read_text())
    (mixed / "ok.cif").write_text((files / "cifs" / "CsCl-097.cif").read_text())
    proc = cgcnn("graphs", mixed, "--output", tmp_path / "out", "--on-error", "error", *TINY)
    assert_one_line_error(proc, "broken", "cannot parse")
    assert not (tmp_path / "out").exists()


def test_predict_on_error_error_names_the_cif(trained, files, tmp_path):
    proc = cgcnn(
        "predict",
        "--checkpoint",
        trained / "best.pt",
        files / "bad",
        "--on-error",
        "error",
        "--output",
        tmp_path / "p.csv",
    )
    assert_one_line_error(proc, "broken")
    assert not (tmp_path / "p.csv").exists()


def test_train_on_a_dataset_left_empty_leaves_no_output_folder(files, tmp_path):
    negative = tmp_path / "negative.csv"
    pd.DataFrame({"material_id": ["CsCl-097", "CsCl-099"], "target": [-1.0, -2.0]}).to_csv(negative, index=False)
    proc = cgcnn(*train_args(files, negative, tmp_path / "out"))
    assert_one_line_error(proc, "too few")
    assert not (tmp_path / "out").exists()


def test_resume_with_other_settings_is_one_line(files, trained, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    argv = train_args(files, files / "targets.csv", copy)
    argv[argv.index("--lr") + 1] = "0.5"
    proc = cgcnn(*argv, "--resume")
    assert_one_line_error(proc, "last.pt", "other settings")


@pytest.mark.parametrize("content", ["truncated", "tensor", "list", "original_without_weights"])
def test_unusable_checkpoints_are_one_line(trained, files, tmp_path, content):
    path = tmp_path / "model.pt"
    if content == "truncated":
        path.write_bytes((trained / "last.pt").read_bytes()[:5000])
    else:
        obj = {
            "tensor": torch.zeros(3),
            "list": [1, 2, 3],
            "original_without_weights": {"state_dict": {}, "normalizer": {"mean": 0.0, "std": 1.0}},
        }[content]
        torch.save(obj, path)
    proc = cgcnn("predict", "--checkpoint", path, "--atom-features", files / "features.json", *TINY, files / "cifs")
    assert_one_line_error(proc, str(path))


def test_debug_shows_the_traceback(files, tmp_path):
    proc = cgcnn("--debug", "graphs", files / "bad", "--output", tmp_path / "out", "--on-error", "error", *TINY)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    proc = cgcnn(
        "graphs", files / "bad", "--output", tmp_path / "out", "--on-error", "error", *TINY, env={"CGCNN_DEBUG": "1"}
    )
    assert "Traceback" in proc.stderr


# -- 2. duplicates and impossible labels ------------------------------------------------------
def test_a_material_labelled_twice_is_a_problem_naming_it():
    labels, problems = parse_targets([("a", "1.0"), ("b", "2.0"), ("a", "1.5")])
    assert labels == {"b": 2.0}
    assert [(p.item_id, "2 times" in p.reason) for p in problems] == [("a", True)]
    with pytest.raises(DatasetError, match="a: labelled 2 times"):
        parse_targets([("a", "1.0"), ("a", "1.5")], on_error="error")


def test_negative_band_gaps_are_refused_and_the_range_is_configurable():
    labels, problems = parse_targets({"a": -0.2, "b": 0.0, "c": 7.0})
    assert labels == {"b": 0.0, "c": 7.0} and [p.item_id for p in problems] == ["a"]
    assert "outside the allowed range [0, inf]" in problems[0].reason
    labels, problems = parse_targets({"a": -0.2, "c": 7.0}, label_range=(None, 5.0))
    assert labels == {"a": -0.2} and [p.item_id for p in problems] == ["c"]


def test_cli_train_with_a_duplicate_label_and_on_error_error_fails(files, tmp_path):
    dup = tmp_path / "dup.csv"
    pd.DataFrame({"material_id": ["CsCl-097", "CsCl-097"], "target": [1.0, 2.0]}).to_csv(dup, index=False)
    proc = cgcnn(*train_args(files, dup, tmp_path / "out"), "--on-error", "error")
    assert_one_line_error(proc, "CsCl-097", "labelled 2 times")


def test_duplicate_cif_ids_with_on_error_error_fail(files, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "X.cif").write_text((files / "cifs" / "CsCl-097.cif").read_text())
    proc = cgcnn("graphs", tmp_path / "a", tmp_path / "b", "--output", tmp_path / "out", "--on-error", "error", *TINY)
    assert_one_line_error(proc, "X", "duplicate material id")


def test_dataset_keeps_the_label_of_a_material_once(tiny_graphs, tiny_features):
    ds = CrystalDataset(tiny_graphs, [("CsCl-097", 1.0), ("CsCl-099", 2.0)], tiny_features)
    assert ds.ids == ["CsCl-097", "CsCl-099"] and ds.y.tolist() == [1.0, 2.0]


# -- 3. nothing to do is not success -------------------------------------------------------------
@pytest.mark.parametrize("case", ["empty", "only_bad"])
def test_nothing_readable_fails(files, tmp_path, case):
    folder = tmp_path / "empty" if case == "empty" else files / "bad"
    folder.mkdir(exist_ok=True)
    proc = cgcnn("graphs", folder, "--output", tmp_path / "out", *TINY)
    assert_one_line_error(proc, "no structure could be read")
    assert not (tmp_path / "out").exists()


def test_upper_case_cif_files_are_found(files, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "UPPER.CIF").write_text((files / "cifs" / "CsCl-097.cif").read_text())
    proc = cgcnn("graphs", tmp_path / "in", "--output", tmp_path / "out", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "1 graphs" in proc.stdout


# -- 5. locks ---------------------------------------------------------------------------------------
HOLD = "import sys, time; from cgcnn.lock import RunLock; l = RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)"


def test_a_second_holder_is_refused_naming_the_pid_and_a_dead_holders_lock_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=f"in use by pid {holder.pid} .* since "):
            RunLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunLock(tmp_path) as lock:  # the kernel released the dead holder's lock
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_two_trainings_into_one_folder_the_second_is_refused(files, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        proc = cgcnn(*train_args(files, files / "targets.csv", out))
        assert_one_line_error(proc, "training output folder", f"pid {holder.pid}")
        assert time.monotonic() - start < 60  # refused at once, not after waiting
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert not (out / "best.pt").exists()


# -- 6. minor ------------------------------------------------------------------------------------
def test_each_skipped_item_is_reported_once(files, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "broken.cif").write_text((files / "bad" / "broken.cif").read_text())
    (mixed / "ok.cif").write_text((files / "cifs" / "CsCl-097.cif").read_text())
    proc = cgcnn("graphs", mixed, "--output", tmp_path / "out", *TINY)
    assert proc.returncode == 0
    lines = [line for line in proc.stderr.splitlines() if "broken" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: skipped broken: "), proc.stderr
    assert str(mixed / "broken.cif") in lines[0]  # the message names the file's path


def test_training_without_a_validation_split_says_so(files, tmp_path):
    two = tmp_path / "two.csv"
    pd.DataFrame({"material_id": ["CsCl-097", "CsCl-099"], "target": [1.0, 2.0]}).to_csv(two, index=False)
    proc = cgcnn(*train_args(files, two, tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["best_val_mae"] is None and "no validation split" in summary["note"]


def test_a_second_pipeline_on_the_same_run_folder_is_refused_at_once(tmp_path):
    run = tmp_path / "runs" / "same"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = subprocess.run(
            [sys.executable, "scripts/run_pipeline.py", "--output", str(tmp_path / "runs"), "--run-id", "same"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert_one_line_error(proc, "run folder", f"pid {holder.pid}", "since")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert not (run / "stages").exists()


def test_the_pipeline_names_an_unknown_profile_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "scripts/run_pipeline.py", "--profile", "fast", "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(proc, "profile 'fast'", "bundled profiles")


def test_of_two_lockers_started_together_exactly_one_holds_the_folder(tmp_path):
    code = (
        "import sys, time; from cgcnn.lock import RunLock, LockedError\n"
        "try:\n    l = RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(3)\n"
        "except LockedError as e:\n    print('refused', e, flush=True)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = sorted(p.communicate(timeout=60)[0].split()[0] for p in procs)
    assert outs == ["held", "refused"]


@pytest.mark.parametrize(
    "content, says",
    [
        (b"", "the file is empty"),
        (b"\xff\xfe\x00m\x00a\x00t\x80\x81", "not a readable UTF-8 CSV"),
        (b"material_id,pbe_gap_ev\nA,1e308\n", "line 2 (A): PBE gap 1e308 eV is above 30 eV"),
        (b"material_id,pbe_gap_ev\nA,inf\n", "line 2 (A): PBE gap 'inf' is not a number >= 0"),
    ],
)
def test_a_pbe_gaps_file_that_cannot_be_used_is_one_error_naming_it(tmp_path, content, says):
    from cgcnn.data.descriptors import read_pbe_gaps

    path = tmp_path / "pbe.csv"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as info:
        read_pbe_gaps(str(path))
    assert str(info.value).startswith(f"--pbe-gaps {path}") and says in str(info.value)
    assert "\n" not in str(info.value)


def test_predict_refuses_to_write_over_its_input_and_a_file_that_is_no_graph_set(trained, files, tmp_path):
    victim = tmp_path / "victim.cif"
    victim.write_text((files / "cifs" / "CsCl-097.cif").read_text())
    before = victim.read_bytes()
    proc = cgcnn("predict", "--checkpoint", trained / "best.pt", victim, "--output", victim)
    assert_one_line_error(proc, f"--output {victim} is one of the inputs")
    assert victim.read_bytes() == before
    bogus = tmp_path / "bogus.npz"
    import numpy as np

    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    bogus.write_bytes((tmp_path / "objects.npy").read_bytes())
    proc = cgcnn("predict", "--checkpoint", trained / "best.pt", bogus)
    assert_one_line_error(proc, str(bogus), "not a crystal-graph set written by cgcnn")
