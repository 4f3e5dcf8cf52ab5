"""Run configuration parsing (config.py: YAML files, --set values, errors naming the file); also QA pins for the
kNN graphs (graphs/knn.py) and the top-level CLI (cli.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recgoat.cli import app
from recgoat.config import load_config, parse_value
from recgoat.errors import ConfigError, RecGOATError
from recgoat.graphs.knn import knn_graph

from conftest import run_main

runner = CliRunner()


def _x(n: int = 6, d: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ kNN graphs
def _pattern(g) -> set[tuple[int, int]]:
    c = g.tocoo()
    return set(zip(c.row.tolist(), c.col.tolist()))


def test_knn_row_with_inf_is_isolated_not_wired_to_the_last_node():
    """A row holding inf normalised to NaN; faiss then padded its result with -1 labels, read as "the last
    valid node": an unweighted graph got an edge of weight 2 (two -1s summed) and a made-up neighbour."""
    x = _x()
    x[2, 0] = np.inf
    for sym in (False, True):
        g = knn_graph(x, 2, symmetrize=sym)
        assert set(np.unique(g.data)) == {1.0}
        assert g[2].nnz == 0 and g[:, 2].nnz == 0
        ref = knn_graph(x, 2, mask=np.arange(6) != 2, symmetrize=sym)  # the same as masking the row out
        assert _pattern(g) == _pattern(ref)


def test_knn_takes_a_numpy_integer_k():
    """``k`` from numpy arithmetic (``min(10, dataset.n_items - 1)``) was a SWIG TypeError inside faiss."""
    x = _x(8)
    assert _pattern(knn_graph(x, np.int64(3))) == _pattern(knn_graph(x, 3))
    assert _pattern(knn_graph(x, np.int32(3), symmetrize=False)) == _pattern(knn_graph(x, 3, symmetrize=False))
    with pytest.raises(TypeError):
        knn_graph(x, 2.5)


def test_knn_weighted_symmetrisation_keeps_a_negative_one_way_edge():
    """``g.maximum(g.T)`` took max(cos, 0) for an edge only one endpoint chose: a negative similarity was
    dropped, so the weighted graph lost edges the unweighted one has (node 0 ended isolated)."""
    x = np.array([[1, 0], [-1, 0.1], [-1, -0.1]], np.float32)
    w = knn_graph(x, 1, symmetrize=True, weighted=True)
    u = knn_graph(x, 1, symmetrize=True, weighted=False)
    assert _pattern(w) == _pattern(u) == {(0, 1), (1, 0), (1, 2), (2, 1)}
    assert w[0, 1] == w[1, 0] == pytest.approx(-1 / np.sqrt(1.01), rel=1e-5)
    assert (w != w.T).nnz == 0


@pytest.mark.parametrize("dtype, factor", [(np.float32, 1e20), (np.float32, 1e-30), (np.float64, 1e200),
                                           (np.float64, 1e-60)])
def test_knn_row_of_extreme_magnitude_keeps_its_direction(dtype, factor):
    """Cosine similarity does not depend on a row's scale, but the float32 norm overflowed (→ a zero row,
    similar to nothing; float64 beyond float32's range gave -inf weights) or underflowed (→ isolated)."""
    x = _x()
    y = x.astype(dtype)
    y[3] *= factor
    for sym in (False, True):
        ref = knn_graph(x, 2, symmetrize=sym, weighted=True)
        g = knn_graph(y, 2, symmetrize=sym, weighted=True)
        assert _pattern(g) == _pattern(ref)
        assert np.isfinite(g.data).all()
        np.testing.assert_allclose(g.toarray(), ref.toarray(), atol=1e-5)


def test_knn_mask_as_list_and_wrong_length():
    x = _x(5)
    g = knn_graph(x, 2, mask=[True, False, True, True, True])
    assert g[1].nnz == 0 and g[:, 1].nnz == 0 and g.nnz > 0
    with pytest.raises(ValueError, match=r"mask has shape \(4,\), expected \(5,\)"):
        knn_graph(x, 2, mask=np.ones(4, bool))
    with pytest.raises(ValueError, match="2-D"):
        knn_graph(x[:, 0], 2)


def test_knn_graph_invariants_with_duplicates_ties_and_large_k():
    """Regression net for the rewrite: no self-loop, k per node (every other node when k >= n), symmetric
    union, the same graph whatever the query block size, and the same on every call."""
    x = np.repeat(_x(5, 3), 4, axis=0)  # 20 rows, each duplicated 4 times: many exact ties
    x[7] = 0  # a zero row
    for k in (2, 3, 50):
        d = knn_graph(x, k, symmetrize=False)
        assert d.diagonal().sum() == 0 and set(np.unique(d.data)) == {1.0}
        deg = d.getnnz(axis=1)
        assert deg[7] == 0 and (np.delete(deg, 7) == min(k, 18)).all()
        s = knn_graph(x, k)
        assert (s != s.T).nnz == 0 and s.diagonal().sum() == 0
        assert _pattern(s) == _pattern(d) | {(j, i) for i, j in _pattern(d)}
        assert (knn_graph(x, k, symmetrize=False, block=3) != d).nnz == 0
        assert (knn_graph(x, k, symmetrize=False) != d).nnz == 0


# ------------------------------------------------------------------------------------------- configuration
def test_scientific_notation_is_a_float_in_files_and_overrides(tmp_path):
    """PyYAML (YAML 1.1) reads ``1e-4`` as the *string* '1e-4': an integer key written so was refused
    ("unable to parse string as an integer") and model params kept strings."""
    f = tmp_path / "run.yaml"
    f.write_text("model:\n  name: lightgcn\n  params: {embedding_dim: 1e1, reg_weight: 1e-4}\n"
                 "trainer:\n  lr: 5e-3\n  epochs: 1E2\n")
    cfg = load_config(f, ["trainer.seed=1e3"])
    assert cfg.model.params == {"embedding_dim": 10.0, "reg_weight": 1e-4}
    assert isinstance(cfg.model.params["reg_weight"], float)
    assert cfg.trainer.lr == 5e-3 and cfg.trainer.epochs == 100 and cfg.trainer.seed == 1000
    cfg = load_config(None, ["model.params.reg_weight=1e-4"])
    assert cfg.model.params == {"reg_weight": 1e-4} and isinstance(cfg.model.params["reg_weight"], float)
    assert parse_value("-2.5E+3") == -2500.0 and parse_value(".5e-3") == 5e-4
    assert [parse_value(t) for t in ("1e", "e5", "._e5", "1e5x")] == ["1e", "e5", "._e5", "1e5x"]


def test_a_key_given_twice_in_a_yaml_file_is_refused_on_one_line(tmp_path):
    """PyYAML keeps the last of two equal keys: a second ``trainer:`` section silently dropped the first's."""
    f = tmp_path / "run.yaml"
    f.write_text("trainer:\n  lr: 0.01\n  epochs: 50\nmodel: {name: bprmf}\ntrainer:\n  batch_size: 4096\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: not valid YAML: line 5, column 1: key 'trainer' is given "
                                          r"twice \(first on line 1\)") as e:
        load_config(f)
    assert "\n" not in str(e.value)
    f.write_text("model:\n  params:\n    embedding_dim: 16\n    embedding_dim: 32\n")
    with pytest.raises(ConfigError, match="key 'embedding_dim' is given twice"):
        load_config(f)
    f.write_text("trainer:\n  lr: [0.1\n")  # any YAML error: one line, with its line number
    with pytest.raises(ConfigError, match=r"not valid YAML: line 3, column 1: expected ',' or ']'") as e:
        load_config(f)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("override, key, value", [
    ("data.name=2024", ("data", "name"), "2024"),  # was: "Input should be a valid string (got 2024)"
    ("data.name=0123", ("data", "name"), "0123"),  # was: YAML 1.1 octal, 83
    ("data.name=12:30", ("data", "name"), "12:30"),  # was: sexagesimal, 750
    ("data.name=no", ("data", "name"), "no"),  # was: False
    ("data.name=my data #2", ("data", "name"), "my data #2"),  # was: silently 'my data' (a YAML comment)
    ("out=on", ("out",), "on"),  # was: True
    ("features=2024", ("features",), "2024"),
    ("data.name=\"quoted\"", ("data", "name"), "quoted"),  # explicit YAML quoting still honoured
    ("trainer.epochs=3", ("trainer", "epochs"), 3),  # typed keys still typed
    ("features=null", ("features",), None),
])
def test_set_string_values_are_kept_as_typed(override, key, value):
    cfg = load_config(None, [override])
    node = cfg
    for k in key:
        node = getattr(node, k)
    assert node == value


def test_cli_options_are_not_read_as_yaml(tmp_path):
    """``--dataset "d #2"`` went through YAML as ``data.name=d #2`` and trained on folder ``d``;
    ``--dataset 2024`` was refused as not a string."""
    (tmp_path / "d").mkdir()
    r = runner.invoke(app, ["train", "--dataset", str(tmp_path / "d #2"), "--epochs", "1"])
    assert isinstance(r.exception, RecGOATError)
    assert f"{tmp_path / 'd #2'}: no such dataset" in str(r.exception)
    r = runner.invoke(app, ["train", "--dataset", "2024", "--epochs", "1"])
    assert isinstance(r.exception, RecGOATError) and str(r.exception).startswith("2024: no such dataset")
    cfg = load_config(None, ["data.name=b"], values={"data.name": "a #1", "out": "no", "trainer.epochs": 2})
    assert (cfg.data.name, cfg.out, cfg.trainer.epochs) == ("b", "no", 2)  # --set wins over the options


def test_empty_yaml_sections_are_empty_mappings(tmp_path):
    """A section whose keys are all commented out is null in YAML: ``--set`` into it said "'params' is not a
    section", and without overrides the run was refused."""
    f = tmp_path / "run.yaml"
    f.write_text("model:\n  name: bprmf\n  params:\n#    embedding_dim: 16\ntrainer:\n#  lr: 0.1\n")
    cfg = load_config(f, ["model.params.embedding_dim=8", "trainer.epochs=3"])
    assert cfg.model.params == {"embedding_dim": 8} and cfg.trainer.epochs == 3
    cfg = load_config(f)
    assert cfg.model.params == {} and cfg.trainer.lr == 1e-3


def test_unknown_model_is_named_before_its_preset():
    with pytest.raises(ConfigError, match="unknown model 'nope'; available:"):  # was: "no preset 'x' for 'nope'"
        load_config(None, ["model.name=nope", "model.preset=x"])


@pytest.mark.parametrize("override", ["trainer..lr=1", ".=1", "trainer.=1"])
def test_empty_key_part_is_refused_by_name(override):
    """``trainer..lr=1`` was reported as "trainer: unknown key"."""
    with pytest.raises(ConfigError, match=r"override .*: empty key name"):
        load_config(None, [override])


def test_empty_dataset_or_out_is_refused():
    """An empty ``--dataset`` / ``data.name`` is Path(""), the current folder."""
    with pytest.raises(ConfigError, match="data.name: String should have at least 1 character"):
        load_config(None, values={"data.name": ""})
    with pytest.raises(ConfigError, match="out: String should have at least 1 character"):
        load_config(None, values={"out": ""})
    r = runner.invoke(app, ["datasets", "info", ""])
    assert isinstance(r.exception, RecGOATError) and "empty" in str(r.exception)


def test_errors_name_the_file_only_for_keys_it_set(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("trainer:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(f, ["trainer.batch_size=big"])
    parts = str(e.value).split("; ")
    assert any(p.startswith(f"{f}: trainer.lrr: unknown key") for p in parts)
    assert any(p.startswith("trainer.batch_size: ") for p in parts)  # was: blamed on run.yaml


def test_yaml_is_read_as_utf8_whatever_the_locale(tmp_path):
    """``read_text()`` used the locale's encoding: under LANG=C without UTF-8 mode a UTF-8 config with an
    accent in a comment was refused as "not a text file (not UTF-8)"."""
    f = tmp_path / "run.yaml"
    f.write_text("model:\n  name: bprmf  # modèle\n", encoding="utf-8")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    code = f"from recgoat.config import load_config; print(load_config({str(f)!r}).model.name)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "bprmf"


# ---------------------------------------------------------------------------------------------------- CLI
def test_error_messages_are_printed_verbatim(monkeypatch, capsys, tmp_path):
    """The message went through rich markup: ``[test]`` in a path vanished, ``[/x]`` crashed the error
    handler itself with a MarkupError traceback."""
    for name in ("[test]/x", "[/x]"):
        code, err = run_main(monkeypatch, capsys, "datasets", "info", str(tmp_path / name))
        assert code == 1
        assert f"{tmp_path / name}: no such dataset" in err and "Traceback" not in err


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc (Linux)")
def test_os_error_is_one_line_not_a_traceback(monkeypatch, capsys, tmp_path):
    data = tmp_path / "tiny"
    data.mkdir()
    (data / "interactions.csv").write_text("user_id,item_id\n" + "".join(f"{u},{i}\n" for u in range(4)
                                                                        for i in range(3)))
    code, err = run_main(monkeypatch, capsys, "datasets", "prepare", str(data), "--k-core", "0",
                         "--out", "/proc/recgoat-qa/out")
    assert code == 1
    assert err.startswith("error: /proc/") and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_help_shows_the_defaults_it_states():
    """``[default: 5]`` in the help strings was taken for rich markup and removed."""
    for cmd in ("info", "prepare"):
        r = runner.invoke(app, ["datasets", cmd, "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0
        out = " ".join(r.output.replace("│", " ").split())
        assert "[default: 5]" in out and "[default: random]" in out and "[default: 2026]" in out


def test_datasets_info_takes_min_rating_as_prepare_does(tmp_path):
    """``datasets info`` previews ``datasets prepare``, but had no ``--min-rating`` (a usage error, exit 2)."""
    import json

    data = tmp_path / "rated"
    data.mkdir()
    rows = [(u, i, (u + i) % 5 + 1) for u in range(4) for i in range(3)]
    (data / "interactions.csv").write_text("user_id,item_id,rating\n" + "".join(f"{u},{i},{r}\n" for u, i, r in rows))
    r = runner.invoke(app, ["datasets", "info", str(data), "--k-core", "0", "--split", "none", "--min-rating", "3"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["interactions"] == sum(r_ >= 3 for *_, r_ in rows) == 8


# ---------------------------------------------------------------------- the run's and the benchmark's config files
@pytest.mark.parametrize("which", ["run", "benchmark"])
@pytest.mark.parametrize("case", ["absent", "folder", "list"])
def test_config_files_are_read_alike_by_run_and_benchmark(which, case, tmp_path):
    """One reader for both: a path with nothing there, a folder, and a YAML list each give one ConfigError naming
    the path (the benchmark's said "config file not found" for a folder)."""
    from recgoat.benchmark.config import load_config as load_benchmark_config

    path = tmp_path / "cfg.yaml"
    if case == "folder":
        path.mkdir()
    elif case == "list":
        path.write_text("- a\n- b\n")
    load = load_config if which == "run" else load_benchmark_config
    with pytest.raises(ConfigError) as e:
        load(path)
    problem = {"absent": "configuration file not found", "folder": "is a folder, not a YAML file",
               "list": "expected a mapping at the top level" if which == "run" else "the config must be a mapping"}
    assert str(e.value) == f"{path}: {problem[case]}"
