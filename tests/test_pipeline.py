"""Behaviour of scripts/run_pipeline.py, checked with tiny throwaway notebooks in tmp_path.

The real notebooks are executed in tests/test_notebooks.py; here the stages are two or three
notebooks of a few lines, so every run takes seconds.
"""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from pipeline_runner import rp


def _notebook(path: Path, *cells: str) -> Path:
    """A notebook whose first cell (tagged ``parameters``) declares run_dir and config."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('run_dir = "."\nconfig = "fixture"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def inputs(tmp_path):
    """A source bucket (raw/ with one file), a snapshot file and three small stages."""
    bucket = tmp_path / "source-bucket"
    (bucket / "raw").mkdir(parents=True)
    (bucket / "raw" / "validation_set.csv").write_text("material_id,bg_exp\nfx-1,1.0\n")
    snapshot = tmp_path / "summary.jsonl.gz"
    snapshot.write_bytes(gzip.compress(b'{"material_id": "fx-1"}\n', mtime=0))
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    first = _notebook(
        nbs / "first.ipynb",
        "from pathlib import Path\n"
        "out = Path(run_dir) / 'data'\nout.mkdir(exist_ok=True)\n"
        "(out / 'a.txt').write_text('alpha')",
    )
    second = _notebook(
        nbs / "second.ipynb",
        "from pathlib import Path\n"
        "text = (Path(run_dir) / 'data' / 'a.txt').read_text()\n"
        "(Path(run_dir) / 'metrics.json').write_text('{\"models\": {}}')\n"
        "(Path(run_dir) / 'b.txt').write_text(text.upper())",
    )
    stages = (rp.Stage("first", first), rp.Stage("second", second))
    return {"bucket": bucket, "snapshot": snapshot, "stages": stages, "nbs": nbs, "out": tmp_path / "runs"}


def _run(inputs, *extra, stages=None):
    argv = [
        "--bucket",
        str(inputs["bucket"]),
        "--materials",
        f"snapshot:{inputs['snapshot']}",
        "--output",
        str(inputs["out"]),
        "--run-id",
        "test-run",
        *extra,
    ]
    lines: list[str] = []
    args = rp.parse_args(argv)
    pipeline = rp.Pipeline(args, stages or inputs["stages"], echo=lines.append)
    code = pipeline.run()
    return code, "\n".join(lines), pipeline.run_dir


def test_run_folder_holds_config_environment_notebooks_and_manifests(inputs):
    code, text, run_dir = _run(inputs, "--seeds", "3,4", "--device", "cpu")
    assert code == 0, text
    config = json.loads((run_dir / "config.json").read_text())
    assert config["profile"] == "fixture"
    assert config["settings"]["seeds"] == [3, 4]
    assert config["settings"]["device"] == "cpu"
    assert config["inputs"]["materials"] == f"snapshot:{inputs['snapshot']}"
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["versions"]["torch"] and env["versions"]["papermill"]
    assert "git_sha" in env
    assert (run_dir / "notebooks" / "first.ipynb").is_file()
    assert (run_dir / "notebooks" / "second.ipynb").is_file()
    assert (run_dir / "b.txt").read_text() == "ALPHA"
    manifest = json.loads((run_dir / "stages" / "01-first.json").read_text())
    assert manifest["status"] == "completed"
    assert list(manifest["outputs"]) == ["data/a.txt"]
    assert manifest["inputs"]["parameters"]["run_dir"] == "."  # relative: the folder can be moved or copied


def test_raw_inputs_are_copied_into_the_run_and_the_source_is_untouched(inputs):
    before = sorted(
        (p.relative_to(inputs["bucket"]), p.read_bytes()) for p in inputs["bucket"].rglob("*") if p.is_file()
    )
    code, text, run_dir = _run(inputs)
    assert code == 0, text
    after = sorted(
        (p.relative_to(inputs["bucket"]), p.read_bytes()) for p in inputs["bucket"].rglob("*") if p.is_file()
    )
    assert after == before
    copied = run_dir / "bucket" / "raw" / "validation_set.csv"
    assert copied.read_bytes() == (inputs["bucket"] / "raw" / "validation_set.csv").read_bytes()
    assert (
        json.loads((run_dir / "config.json").read_text())["inputs"]["work_bucket"] == "bucket"
    )  # relative to the run folder


def test_second_run_with_the_same_inputs_skips_every_stage(inputs):
    assert _run(inputs)[0] == 0
    code, text, run_dir = _run(inputs)
    assert code == 0
    assert text.count("skipped (inputs unchanged)") == 2
    assert "runs:" not in text


def test_force_runs_every_stage_again(inputs):
    assert _run(inputs)[0] == 0
    code, text, _ = _run(inputs, "--force")
    assert code == 0
    assert "skipped" not in text
    assert text.count("done in") >= 2


def test_changed_notebook_reruns_from_that_stage_on(inputs):
    assert _run(inputs)[0] == 0
    second = inputs["nbs"] / "second.ipynb"
    nb = nbformat.read(second, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("print('changed')"))
    nbformat.write(nb, second)
    code, text, _ = _run(inputs)
    assert code == 0
    assert "first.ipynb: skipped" in text
    assert "second.ipynb: runs: notebook changed" in text


def test_changed_upstream_output_reruns_the_later_stage(inputs):
    assert _run(inputs)[0] == 0
    first = inputs["nbs"] / "first.ipynb"
    nb = nbformat.read(first, as_version=4)
    nb.cells[-1].source = nb.cells[-1].source.replace("'alpha'", "'beta'")
    nbformat.write(nb, first)
    code, text, run_dir = _run(inputs)
    assert code == 0
    assert "skipped" not in text
    assert "second.ipynb: runs: outputs of an earlier stage changed: first" in text
    assert (run_dir / "b.txt").read_text() == "BETA"


def test_deleted_output_reruns_its_stage(inputs):
    code, _, run_dir = _run(inputs)
    assert code == 0
    (run_dir / "b.txt").unlink()
    code, text, _ = _run(inputs)
    assert "first.ipynb: skipped" in text
    assert "second.ipynb: runs: outputs missing or changed: b.txt" in text
    assert (run_dir / "b.txt").is_file()


def test_outputs_written_by_a_notebook_run_by_hand_are_said_to_be_replaced(inputs):
    """A notebook run by hand in the run folder (papermill -p folds 2) rewrote a stage's output;
    the next pipeline run replaces it with the profile's result, and says so."""
    code, _, run_dir = _run(inputs)
    assert code == 0
    (run_dir / "b.txt").write_text("WRITTEN BY HAND")
    (run_dir / "metrics.json").unlink()  # gone, not rewritten: a missing output is not "written outside"
    code, text, _ = _run(inputs)
    assert code == 0
    assert "second.ipynb: runs: outputs missing or changed: b.txt, metrics.json" in text
    assert (
        "second.ipynb: replaces 1 output(s) written outside the runner since its last run (b.txt), e.g. by the "
        "notebook run by hand; to keep a changed setting, give it to the runner (--set KEY=VALUE)"
    ) in text
    assert "first.ipynb: replaces" not in text
    assert (run_dir / "b.txt").read_text() == "ALPHA"
    code, text, _ = _run(inputs, "--force")  # the runner's own outputs are never "written outside"
    assert code == 0 and "replaces" not in text


def test_the_last_run_is_linked_as_latest_for_the_notebooks(inputs):
    code, text, run_dir = _run(inputs)
    link = inputs["out"] / "latest"
    assert code == 0 and link.is_symlink() and os.readlink(link) == "test-run" and link.resolve() == run_dir
    assert f"notebooks: give them run_dir={run_dir} and config={run_dir / 'config.json'}" in text  # not ./runs
    code, _, other = _run(inputs, "--set", "cv.folds=4", "--run-id", "other-run")
    assert code == 0 and os.readlink(link) == "other-run"  # the last run, whichever it is
    link.unlink()
    link.mkdir()  # a run folder of that name is never replaced by a link
    assert _run(inputs)[0] == 0 and not link.is_symlink()


def test_a_notebook_without_a_run_folder_says_to_run_the_pipeline_first(tmp_path):
    from cgcnn.study.profiles import ProfileNotFoundError, load_profile

    with pytest.raises(ProfileNotFoundError, match=r"no run folder .*runs/latest: run the pipeline once first"):
        load_profile(tmp_path / "runs" / "latest" / "config.json")


def test_the_run_ends_by_naming_its_report_and_a_fixture_run_says_its_numbers_mean_nothing(inputs):
    report = _notebook(
        inputs["nbs"] / "report.ipynb", "from pathlib import Path\n(Path(run_dir) / 'report.md').write_text('#')"
    )
    stages = (*inputs["stages"], rp.Stage("report", report))
    code, text, run_dir = _run(inputs, stages=stages)  # the default profile: fixture
    note = " (a fixture run: its numbers only show that every step runs; they mean nothing)"
    assert code == 0 and f"report: {run_dir / 'report.md'}{note}" in text.splitlines()
    code, text, run_dir = _run(inputs, "--profile", "default", "--run-id", "real-run", stages=stages)
    assert code == 0 and f"report: {run_dir / 'report.md'}" in text.splitlines() and note not in text


def test_failing_stage_stops_the_run_and_names_the_cell(inputs):
    bad = _notebook(
        inputs["nbs"] / "bad.ipynb",
        "x = 1",
        "raise ValueError('boom: the fixture is broken')",
    )
    stages = (inputs["stages"][0], rp.Stage("bad", bad), inputs["stages"][1])
    code, text, run_dir = _run(inputs, stages=stages)
    assert code == 1
    # cells of the executed notebook: injected parameters, parameters, x = 1, raise  -> index 3
    assert "FAILED in cell 3" in text
    assert "bad.ipynb" in text
    assert "ValueError: boom: the fixture is broken" in text
    assert "raise ValueError('boom" in text
    manifest = json.loads((run_dir / "stages" / "02-bad.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["error"]["cell_index"] == 3
    assert not (run_dir / "stages" / "03-second.json").exists()  # the run stopped
    assert not (run_dir / "b.txt").exists()


def test_failed_stage_is_retried_on_the_next_run(inputs):
    bad = _notebook(inputs["nbs"] / "flaky.ipynb", "raise RuntimeError('first time')")
    stages = (rp.Stage("flaky", bad),)
    assert _run(inputs, stages=stages)[0] == 1
    _notebook(bad, "print('fixed')")
    code, text, _ = _run(inputs, stages=stages)
    assert code == 0
    assert "skipped" not in text


def _run_id(inputs, *extra) -> str:
    """The run id the runner would choose (nothing runs)."""
    argv = ["--bucket", str(inputs["bucket"]), "--materials", f"snapshot:{inputs['snapshot']}"]
    argv += ["--output", str(inputs["out"]), *extra]
    return rp.Pipeline(rp.parse_args(argv), inputs["stages"], echo=lambda s: None).run_id


def test_default_run_id_depends_on_profile_and_inputs(inputs):
    def run_id(*extra):
        return _run_id(inputs, *extra)

    assert run_id() == run_id()
    assert run_id().startswith("fixture-")
    assert run_id("--seeds", "7") != run_id()


def test_bad_arguments_are_rejected_with_a_message(inputs, monkeypatch):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with pytest.raises(SystemExit, match="MP_API_KEY"):
        rp.Pipeline(rp.parse_args(["--bucket", str(inputs["bucket"]), "--materials", "mp"]))
    with pytest.raises(SystemExit, match="snapshot:PATH"):
        rp.Pipeline(rp.parse_args(["--bucket", str(inputs["bucket"]), "--materials", "somewhere"]))
    with pytest.raises(SystemExit, match="no raw/ folder"):
        rp.Pipeline(rp.parse_args(["--bucket", str(inputs["nbs"]), "--materials", f"snapshot:{inputs['snapshot']}"]))
    with pytest.raises(SystemExit, match="integers"):
        rp.Pipeline(
            rp.parse_args(
                ["--bucket", str(inputs["bucket"]), "--materials", f"snapshot:{inputs['snapshot']}", "--seeds", "a,b"]
            )
        )


def test_secret_values_are_redacted_from_executed_notebooks(tmp_path):
    path = tmp_path / "nb.ipynb"
    path.write_text('{"text": "key=abcdefgh12345 and again abcdefgh12345"}')
    n = rp.redact_secrets(path, {"MP_API_KEY": "abcdefgh12345"})
    assert n == 2
    assert "abcdefgh12345" not in path.read_text()
    assert path.read_text().count("***") == 2


def test_secret_in_the_environment_never_reaches_the_run_folder(inputs, monkeypatch):
    monkeypatch.setenv("MP_API_KEY", "sekrit-value-123456")
    leaky = _notebook(inputs["nbs"] / "leaky.ipynb", "import os\nprint(os.environ['MP_API_KEY'])")
    code, text, run_dir = _run(inputs, stages=(rp.Stage("leaky", leaky),))
    assert code == 0
    assert "replaced by ***" in text
    for p in run_dir.rglob("*"):
        if p.is_file() and p.suffix in (".json", ".ipynb"):
            assert "sekrit-value-123456" not in p.read_text()


def test_cuda_is_refused_up_front_when_absent(inputs):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit, match="CUDA is not available"):
        rp.Pipeline(
            rp.parse_args(
                ["--bucket", str(inputs["bucket"]), "--materials", f"snapshot:{inputs['snapshot']}", "--device", "cuda"]
            )
        )


def test_changed_code_a_stage_imports_reruns_it_and_says_which_file(inputs, monkeypatch):
    assert _run(inputs)[0] == 0
    real = rp.stage_code
    monkeypatch.setattr(
        rp, "stage_code", lambda nb: {**real(nb), "cgcnn/x.py": "edited"} if nb.name == "second.ipynb" else real(nb)
    )
    code, text, _ = _run(inputs)
    assert code == 0
    assert "first.ipynb: skipped" in text and "second.ipynb: runs: code changed: cgcnn/x.py" in text


def test_a_stage_reads_only_its_settings(inputs):
    first, second = inputs["stages"]
    stages = (
        rp.Stage("first", first.notebook, settings=("graph",)),
        rp.Stage("second", second.notebook, settings=("cv",)),
    )
    assert _run(inputs, stages=stages)[0] == 0
    code, text, _ = _run(inputs, "--set", "cv.folds=4", stages=stages)
    assert code == 0
    assert "first.ipynb: skipped" in text and "second.ipynb: runs: settings changed: cv.folds" in text


def test_set_changes_a_setting_records_it_and_names_the_run(inputs):
    code, text, run_dir = _run(inputs, "--set", "cv.folds=4", "--set", "adapt.lr_grid=[0.001, 0.003]")
    assert code == 0, text
    config = json.loads((run_dir / "config.json").read_text())
    assert config["settings"]["cv"]["folds"] == 4 and config["settings"]["adapt"]["lr_grid"] == [0.001, 0.003]
    assert config["overrides"] == {"cv.folds": 4, "adapt.lr_grid": [0.001, 0.003]}
    changed = _run_id(inputs, "--set", "cv.folds=4")
    assert changed != _run_id(inputs) and changed == _run_id(inputs, "--set", "cv.folds=4")


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("adapt.no_such_key=1", "adapt has no setting 'no_such_key'"),
        ("cv.folds=1", "setting 'cv.folds': Input should be greater than or equal to 2"),
        ("cv.folds", "expected KEY=VALUE"),
    ],
)
def test_a_bad_setting_is_one_line_before_anything_runs(inputs, setting, says):
    proc = subprocess.run(
        [
            sys.executable,
            str(rp.REPO / "scripts" / "run_pipeline.py"),
            "--bucket",
            str(inputs["bucket"]),
            "--materials",
            f"snapshot:{inputs['snapshot']}",
            "--output",
            str(inputs["out"]),
            "--set",
            setting,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], proc.stderr
    assert not inputs["out"].exists()  # nothing ran


def test_only_runs_one_stage_and_from_runs_the_rest(inputs):
    assert _run(inputs)[0] == 0
    code, text, _ = _run(inputs, "--only", "second")
    assert code == 0
    assert "first.ipynb: not run" in text and "second.ipynb: runs: asked for (--only)" in text
    code, text, _ = _run(inputs, "--from", "1")
    assert code == 0
    assert "first.ipynb: runs: asked for (--from first)" in text and "second.ipynb: runs" in text


def test_only_and_from_refuse_when_an_earlier_stage_has_not_run(inputs):
    with pytest.raises(SystemExit, match=r"stage 1 \(first\) has not completed"):
        _run(inputs, "--only", "second")
    assert _run(inputs)[0] == 0
    (inputs["out"] / "test-run" / "data" / "a.txt").unlink()
    with pytest.raises(SystemExit, match=r"outputs of stage 1 \(first\) are missing"):
        _run(inputs, "--from", "second")
    with pytest.raises(SystemExit, match="no stage 'nope'; stages: 1 first, 2 second"):
        _run(inputs, "--only", "nope")


def test_the_docs_number_the_stages_as_the_runner_does():
    """docs/pipeline.md and README.md: every `[k/N] notebook` line and both stage tables follow rp.STAGES."""
    import re

    repo = Path(rp.__file__).resolve().parents[1]
    docs, readme = (repo / "docs" / "pipeline.md").read_text(), (repo / "README.md").read_text()
    lines = re.findall(r"\[(\d+)/(\d+)\] (\S+\.ipynb)", docs + readme)
    assert len(lines) >= 4
    for k, n, notebook in lines:
        assert int(n) == len(rp.STAGES) and rp.STAGES[int(k) - 1].relpath == notebook, (k, n, notebook)
    for text in (docs, readme):
        rows = re.findall(r"^\| (\d+) \| (?:`[\w-]+` \| )?`([^`]+\.ipynb)`", text, re.M)
        assert rows == [(str(k + 1), s.relpath) for k, s in enumerate(rp.STAGES)]
