"""Value types of the run configuration (config.py): ``--set`` values as YAML reads them, YAML files, presets, and
which file an error names."""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

from recgoat.config import load_config, parse_value
from recgoat.errors import ConfigError
from recgoat.models.base import get_model_class

from conftest import run_main

BOOL_MSG = "expected a number, not a boolean"


# ------------------------------------------------------------------------------ booleans for numbers
@pytest.mark.parametrize("override", [
    "trainer.epochs=true",  # was: 1 epoch
    "data.k_core=no",  # was: 0, k-core filtering silently off
    "data.min_rating=yes",  # was: 1.0
    "trainer.lr=off",  # was: 0.0, parameters never move
    "trainer.num_threads=on",
    "model.params.embedding_dim=on",  # was: a 1-dimensional embedding
    "data.ratios=[true,0,0]",  # was: (1.0, 0, 0)
    "trainer.ks=[true,5]",  # was: "metric recall@20 is not evaluated: ... ks [1, 5]"
])
def test_a_boolean_for_a_number_key_is_refused_by_name(override):
    key = override.partition("=")[0]
    with pytest.raises(ConfigError, match="^" + re.escape(f"{key}: {BOOL_MSG}")):
        load_config(None, [override])


@pytest.mark.parametrize("text, value", [("0", False), ("1", True), ("off", False), ("yes", True)])
def test_boolean_keys_still_take_yaml_booleans_and_0_1(text, value):
    cfg = load_config(None, [f"trainer.progress={text}", "model.name=vbpr", f"model.params.use_bias={text}"])
    assert cfg.trainer.progress is value and cfg.model.params["use_bias"] == value


def test_a_boolean_for_a_number_in_a_file_names_the_file(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("model:\n  name: bprmf\n  params: {embedding_dim: yes}\ntrainer:\n  epochs: on\n")
    with pytest.raises(ConfigError, match="^" + re.escape(f"{f}: trainer.epochs: {BOOL_MSG}")):
        load_config(f)
    f.write_text("model:\n  name: bprmf\n  params: {embedding_dim: yes}\n")
    with pytest.raises(ConfigError, match="^" + re.escape(f"{f}: model.params.embedding_dim: {BOOL_MSG}")):
        load_config(f)


# ------------------------------------------------------------------------------ YAML 1.1 numbers
@pytest.mark.parametrize("text, value", [
    ("010", 10), ("0123", 123), ("-07", -7), ("0", 0), ("0x10", 16), ("1_000", 1000), ("1e-3", 1e-3),
    ("1:30", "1:30"), ("1:30.5", "1:30.5"),  # was: base 60, 90 and 5430.5
])
def test_yaml_1_1_octal_and_base_60_are_read_as_yaml_1_2_does(text, value):
    got = parse_value(text)
    assert got == value and type(got) is type(value)


def test_leading_zero_and_colon_numbers_in_keys(tmp_path):
    """``data.seed: 0123`` was seed 83; ``trainer.epochs=1:30`` was 90 epochs."""
    f = tmp_path / "run.yaml"
    f.write_text("data:\n  seed: 0123\n")
    assert load_config(f, ["trainer.epochs=010"]).data.seed == 123
    assert load_config(f, ["trainer.epochs=010"]).trainer.epochs == 10
    with pytest.raises(ConfigError, match=r"^trainer\.epochs: .*\(got '1:30'\)"):
        load_config(None, ["trainer.epochs=1:30"])
    assert load_config(None, ["data.name=12:30"]).data.name == "12:30"


# ------------------------------------------------------------------------------ non-string YAML keys
@pytest.mark.parametrize("text, got", [("~: 1\n", "None"), ("1: x\n", "1"), ("true: 1\n", "True")])
def test_a_non_string_top_level_key_is_a_config_error_not_a_type_error(tmp_path, text, got):
    """``RunConfig(**data)`` raised ``TypeError: keywords must be strings`` (a traceback)."""
    f = tmp_path / "run.yaml"
    f.write_text(text)
    expected = "^" + re.escape(f"{f}: ") + r"\w+: " + re.escape(f"Keys should be strings (got {got})")
    with pytest.raises(ConfigError, match=expected):
        load_config(f)


def test_a_non_string_key_in_a_preset_is_a_config_error(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("n_layers: 2\n3: 4\n")
    with pytest.raises(ConfigError, match="^" + re.escape(f"{preset}: model.params.3: Keys should be strings")):
        load_config(None, ["model.name=lightgcn", f"model.preset={preset}"])


# ------------------------------------------------------------------------------ which file an error names
def test_a_bad_param_in_the_file_names_the_file(tmp_path):
    """Errors in ``model.params`` named no file while every other section's did."""
    f = tmp_path / "run.yaml"
    f.write_text("model:\n  name: bprmf\n  params: {embeding_dim: 8}\n")
    expected = f"{f}: model.params.embeding_dim: unknown key (did you mean 'embedding_dim'? valid keys: embedding_dim, "
    with pytest.raises(ConfigError, match="^" + re.escape(expected + "reg_weight)") + "$"):
        load_config(f)
    with pytest.raises(ConfigError, match=r"^model\.params\.reg_weight: "):  # set on the command line: no file
        load_config(f, ["model.params.embeding_dim=null", "model.params.reg_weight=much"])


def test_a_bad_param_from_a_preset_names_the_preset_unless_overridden(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("n_layers: 2\nwidth: 3\n")
    f = tmp_path / "run.yaml"
    f.write_text(f"model:\n  name: lightgcn\n  preset: {preset}\n  params: {{n_layer: 1}}\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert set(str(e.value).split("; ")) == {
        f"{f}: model.params.n_layer: unknown key (did you mean 'n_layers'? valid keys: embedding_dim, n_layers, "
        "reg_weight)",
        f"{preset}: model.params.width: unknown key (valid keys: embedding_dim, n_layers, reg_weight)"}
    with pytest.raises(ConfigError) as e:  # the command line sets width: its error names no file
        load_config(None, ["model.name=lightgcn", f"model.preset={preset}", "model.params.width=1"])
    assert str(e.value).startswith("model.params.width: unknown key")


# ------------------------------------------------------------------------------ presets
def test_every_packaged_preset_validates_and_explicit_params_win():
    configs = Path(str(resources.files("recgoat") / "configs"))
    names = sorted(p.stem.removeprefix("recgoat-") for p in configs.glob("recgoat-*.yaml"))
    assert {"baby", "sports", "electronics", "ml100k"} <= set(names)
    for name in names:
        cfg = load_config(None, ["model.name=recgoat", f"model.preset={name}", "model.params.embedding_dim=8",
                                 "model.params.view_dropout=0.25"])
        assert cfg.model.params["embedding_dim"] == 8 and cfg.model.params["view_dropout"] == 0.25, name


@pytest.mark.parametrize("name", ["bm3", "bprmf", "freedom", "lattice", "lgmrec", "lightgcn", "mgcn", "recgoat", "vbpr"])
def test_a_param_typo_names_the_closest_param_of_each_model(name):
    params = list(get_model_class(name).Config.model_fields)
    for param in params[:3]:
        typo = param[:-1]  # the last letter dropped
        with pytest.raises(ConfigError) as e:
            load_config(None, [f"model.name={name}", f"model.params.{typo}=1"])
        close = re.search(r"did you mean '(\w+)'\?", str(e.value))
        assert str(e.value).startswith(f"model.params.{typo}: unknown key") and close, str(e.value)
        assert close.group(1) in params


# ------------------------------------------------------------------------------ --set values
@pytest.mark.parametrize("overrides, key, value", [
    (["data.name=a=b"], ("data", "name"), "a=b"),  # the first = splits
    (["trainer.epochs=3", "trainer.epochs=5"], ("trainer", "epochs"), 5),  # last wins
    (["trainer.epochs=2.0"], ("trainer", "epochs"), 2),
    (["trainer.epochs=1_000"], ("trainer", "epochs"), 1000),
    (["trainer.lr=\"0.001\""], ("trainer", "lr"), 0.001),
    ([" trainer . lr = 1e-2"], ("trainer", "lr"), 0.01),
    (["model.name=recgoat", "model.params.modalities=[text]"], ("model", "params"), {"modalities": ["text"]}),
    (["features="], ("features",), None),
])
def test_set_values(overrides, key, value):
    node = load_config(None, overrides)
    for k in key:
        node = getattr(node, k)
    assert node == value and type(node) is type(value)


@pytest.mark.parametrize("override, message", [
    ("trainer.epochs=2.5", "trainer.epochs: Input should be a valid integer, got a number with a fractional part"),
    ("trainer.lr=", "trainer.lr: Input should be a valid number (got None)"),
    ("trainer=3", "trainer: Input should be a valid dictionary"),
    ("model.params=3", "model.params: Input should be a valid dictionary"),
    ("trainer.epochs=.nan", "trainer.epochs: Input should be a finite number"),
    ("model.params.modalities=text", "model.params.modalities: Input should be a valid list"),
])
def test_bad_set_values_are_refused_by_key(override, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        load_config(None, ["model.name=recgoat", override])


@pytest.mark.parametrize("content, key", [("trainer: 5\n", "trainer"), ("model:\n  params: [1]\n", "model.params"),
                                          ("data: x\n", "data")])
def test_a_file_section_that_is_not_a_mapping_is_the_files_error(tmp_path, content, key):
    """``trainer: 5`` with ``--epochs 1`` was "override 'trainer.epochs=1': 'trainer' is not a section": an
    override never typed, and not the file."""
    f = tmp_path / "run.yaml"
    f.write_text(content)
    with pytest.raises(ConfigError, match="^" + re.escape(f"{f}: {key}: expected a section")):
        load_config(f, ["trainer.epochs=1"], values={"data.name": "x", "trainer.seed": 1})


def test_a_value_the_validator_quotes_is_not_quoted_twice():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["trainer.metric=auc@20"])
    assert str(e.value) == "trainer.metric: metric must look like recall@20, got 'auc@20'"


def test_set_wins_over_the_file(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("trainer:\n  lr: 0.1\n  epochs: 7\n")
    cfg = load_config(f, ["trainer.lr=0.2"])
    assert (cfg.trainer.lr, cfg.trainer.epochs) == (0.2, 7)


# ------------------------------------------------------------------------------ YAML files
@pytest.mark.parametrize("content, message", [
    (b"trainer:\n\tlr: 0.1\n", r"not valid YAML: line 2, column 1: found character '\t'"),
    (b"- a\n- b\n", "expected a mapping at the top level"),
    (b"data:\n  name: caf\xe9\n", "not a text file (not UTF-8)"),
    ("trainer:\n  lr: 0.1\n".encode("utf-16"), "not a text file (not UTF-8)"),
    (b"trainer: {lr: 0.1}\n---\ntrainer: {lr: 0.2}\n", "not valid YAML: line 2, column 1: but found another doc"),
    (b"trainer: !!python/object/apply:os.system ['true']\n", "not valid YAML: line 1, column 10: could not "),
])
def test_bad_yaml_files_are_one_line_naming_the_file(tmp_path, content, message):
    f = tmp_path / "run.yaml"
    f.write_bytes(content)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert str(e.value).startswith(f"{f}: ") and message in str(e.value) and "\n" not in str(e.value)


def test_bom_empty_file_and_merge_keys(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_bytes(b"\xef\xbb\xbftrainer:\n  lr: 0.1\n")
    assert load_config(f).trainer.lr == 0.1
    f.write_text("")
    assert load_config(f).trainer.lr == 1e-3
    f.write_text("trainer:\n  <<: {lr: 0.1, epochs: 3}\n  lr: 0.2\n")  # a key over a merged one is no duplicate
    cfg = load_config(f)
    assert (cfg.trainer.lr, cfg.trainer.epochs) == (0.2, 3)


# ------------------------------------------------------------------------------ CLI
def test_cli_boolean_for_a_number_and_a_null_key_are_one_line(monkeypatch, capsys, tmp_path):
    code, err = run_main(monkeypatch, capsys, "train", "--set", "trainer.epochs=yes")
    assert code == 1 and err.strip() == f"error: trainer.epochs: {BOOL_MSG} (YAML reads yes/no/on/off/true/false " \
                                        "so) (got True)"
    f = tmp_path / "run.yaml"
    f.write_text("~: 1\n")
    code, err = run_main(monkeypatch, capsys, "train", "--config", str(f))
    assert code == 1 and "Keys should be strings" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_train_and_model_configs_refuse_a_boolean_for_a_number():
    # load_config refused them, but TrainConfig and the models' configs (Python API, benchmark overrides) read
    # True as 1 epoch / a 1-dimensional embedding
    from pydantic import ValidationError

    from recgoat.models import get_model_class
    from recgoat.training.trainer import TrainConfig

    with pytest.raises(ValidationError, match="epochs: expected a number, not a boolean"):
        TrainConfig(epochs=True)
    with pytest.raises(ValidationError, match="ks: expected a number, not a boolean"):
        TrainConfig(ks=[True, 5])
    with pytest.raises(ValidationError, match="embedding_dim: expected a number, not a boolean"):
        get_model_class("lightgcn").Config(embedding_dim=True)
    assert TrainConfig(epochs=3).epochs == 3 and TrainConfig(progress=False).progress is False  # bools stay bools
