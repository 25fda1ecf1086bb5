"""The package's import graph (cgcnn.provenance): no cycles, counting imports inside functions;
what a notebook runs is what it imports, transitively."""

from pathlib import Path

import nbformat

from cgcnn.provenance import find_cycle, import_graph, modules_used, notebook_imports

REPO = Path(__file__).resolve().parents[1]


def test_find_cycle_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_imports_inside_functions(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg import b\n")
    (pkg / "b.py").write_text("import pkg.a\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]


def test_cgcnn_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_notebook_runs_its_imports_their_parents_and_what_they_import(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%matplotlib inline\nfrom cgcnn.study import report")]
    nbformat.write(nb, tmp_path / "nb.ipynb")
    used = modules_used(notebook_imports(tmp_path / "nb.ipynb"))
    assert {"cgcnn", "cgcnn.study", "cgcnn.study.report", "cgcnn.study.display"} <= set(used)
    assert "cgcnn.nn.model" not in used  # the report never runs the network


def test_the_data_preparation_notebooks_never_reach_the_network():
    for rel in ("01-data-preparation/01-etl.ipynb", "01-data-preparation/02-eda.ipynb"):
        used = modules_used(notebook_imports(REPO / rel))
        assert "cgcnn.study.data_preparation" in used and "cgcnn.nn.model" not in used, rel


def test_importing_a_module_runs_its_packages_init(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "etl").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "etl" / "__init__.py").write_text("from pkg.etl.run import run\n")
    (pkg / "etl" / "run.py").write_text("from pkg.building import build\n")
    (pkg / "etl" / "snapshot.py").write_text("")
    (pkg / "building.py").write_text("def build():\n    from pkg.etl.snapshot import read\n")
    # building -> pkg.etl (its __init__ runs first) -> pkg.etl.run -> building
    assert find_cycle(import_graph(pkg)) == ["pkg.building", "pkg.etl", "pkg.etl.run", "pkg.building"]


def test_names_a_package_imports_on_first_use_count_as_their_module(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('_API = {"fit": "pkg.training"}\n')
    (pkg / "training.py").write_text("")
    (pkg / "notebook_like.py").write_text("from pkg import fit\n")
    assert import_graph(pkg)["pkg.notebook_like"] == {"pkg.training"}  # pkg itself: already running


def test_layers_keep_stage_inputs_small():
    """Data reads no bucket, training and evaluation import nothing of prediction, and no stage
    after the EDA runs an ETL module (so a change to the ETL reruns only the ETL and the EDA)."""
    graph = import_graph(parents=True)

    def reach(prefix: str, below: str) -> list[str]:
        return sorted(m for m, targets in graph.items() if m.startswith(prefix) for t in targets if t.startswith(below))

    assert reach("cgcnn.data", "cgcnn.etl") == []
    assert reach("cgcnn.training", "cgcnn.prediction") == []
    assert reach("cgcnn.evaluation", "cgcnn.prediction") == []
    later = sorted(REPO.glob("02-ml-dev/*.ipynb")) + sorted(REPO.glob("03-insights/*.ipynb"))
    assert len(later) == 7
    for notebook in later:
        etl = [m for m in modules_used(notebook_imports(notebook)) if m.startswith("cgcnn.etl")]
        assert etl == [], f"{notebook.name} runs {etl}"
