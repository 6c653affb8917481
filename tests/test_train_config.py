"""The training config (`lsr.training.config`): defaults, ``section.key=value`` overrides,
errors that name the offending key, and the save/load round trip."""

from __future__ import annotations

from pathlib import Path

import re

import pytest

from lsr.training.config import ConfigError, ExperimentConfig, load_config, save_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults():
    assert load_config(None) == ExperimentConfig()
    config = load_config(None)
    assert config.training.batch_size == 8 and config.loss.kind == "infonce"


def test_yaml_values_and_overrides(tmp_path):
    path = write(tmp_path, "model:\n  base: some/model\ntraining:\n  batch_size: 4\n  learning_rate: 0.0001\n")
    config = load_config(path, ["training.max_steps=5", "regularizer.document_weight=0.01", "model.base=null"])
    assert config.training.batch_size == 4
    assert config.training.max_steps == 5 and isinstance(config.training.max_steps, int)
    assert config.regularizer.document_weight == 0.01 and isinstance(config.regularizer.document_weight, float)
    assert config.model.base is None
    # an int given for a float key becomes a float; untouched keys keep their defaults
    assert isinstance(load_config(None, ["training.learning_rate=1"]).training.learning_rate, float)
    assert config.data == ExperimentConfig().data


@pytest.mark.parametrize("text, key", [
    ("training:\n  batchsize: 4\n", "training.batchsize"),      # unknown key
    ("trainer:\n  batch_size: 4\n", "trainer"),                 # unknown section
    ("training:\n  batch_size: eight\n", "training.batch_size"),  # wrong type
    ("training:\n  batch_size: 0\n", "training.batch_size"),    # below 1
    ("loss:\n  kind: foo\n", "loss.kind"),                      # not a choice
    ("loss:\n  kind: marginmse\n", "loss.teacher"),             # distillation without teacher
    ("regularizer:\n  document: idf_flops\n", "regularizer.document"),  # model.type is splade
])
def test_invalid_file_names_the_key(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert key in str(error.value)
    assert str(path) in str(error.value)


def test_valid_combinations_are_accepted(tmp_path):
    config = load_config(write(tmp_path, "loss:\n  kind: marginmse\n  teacher: file\n"
                                         "model:\n  type: inference-free\n"
                                         "regularizer:\n  document: idf_flops\n"))
    assert config.loss.teacher == "file" and config.regularizer.document == "idf_flops"


@pytest.mark.parametrize("override", ["training.max_steps", "max_steps=5", "training.max_step=5"])
def test_bad_overrides(override):
    with pytest.raises(ConfigError):
        load_config(None, [override])


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "absent.yaml")


def test_save_then_load_round_trips(tmp_path):
    config = load_config(None, ["training.max_steps=7", "regularizer.threshold=3", "loss.temperature=0.05",
                                "training.learning_rate=0.00002", "data.dev=beir/nfcorpus/dev"])
    path = tmp_path / "saved.yaml"
    save_config(config, path)
    assert load_config(path) == config


def test_exponent_notation_float(tmp_path):
    # PyYAML reads 2e-5 (no dot) as a string; a float key still takes it.
    assert load_config(write(tmp_path, "training:\n  learning_rate: 2e-5\n")).training.learning_rate == 2e-5
    assert load_config(None, ["training.learning_rate=2e-5"]).training.learning_rate == 2e-5


def test_override_text_stays_a_string_for_string_keys():
    config = load_config(None, ["model.base=2024", "data.train=yes"])
    assert config.model.base == "2024" and config.data.train == "yes"


@pytest.mark.parametrize("override, key", [
    ("data.num_negatives=-1", "data.num_negatives"),
    ("loss.temperature=0", "loss.temperature"),
    ("regularizer.query_weight=-1", "regularizer.query_weight"),
])
def test_out_of_range_numbers_name_the_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(None, [override])
