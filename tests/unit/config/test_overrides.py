"""Config loading: YAML, dot-notation overrides, coercion and error messages."""

from __future__ import annotations

import pytest

from tempering.config import dump_config, load_config, save_resolved_config
from tempering.config.loading import diff_configs
from tempering.errors import UserError


def write(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_defaults_without_a_file():
    config = load_config()
    assert config.training.batch_size == 8
    assert config.data.val_split == 0.1
    assert config.training.accumulation_steps == 1


def test_nested_overrides_coerce_types():
    config = load_config(None, ["training.batch_size=4", "training.learning_rate=1e-4",
                                "training.compile=true", "run.save_dir=runs/x", "model.rope_theta=500000"])
    assert config.training.batch_size == 4
    assert config.training.learning_rate == pytest.approx(1e-4)
    assert config.training.compile is True
    assert str(config.run.save_dir) == "runs/x"
    assert config.model.rope_theta == 500000.0


def test_list_index_overrides_edit_and_append(tmp_path):
    path = write(tmp_path, "data:\n  datasets:\n    - path: a\n    - path: b\n")
    config = load_config(path, ["data.datasets.1.weight=2", "data.datasets.2.path=c"])
    assert [d.path for d in config.data.datasets] == ["a", "b", "c"]
    assert [d.weight for d in config.data.datasets] == [1.0, 2.0, 1.0]


def test_list_index_past_the_end_is_an_error(tmp_path):
    path = write(tmp_path, "data:\n  datasets:\n    - path: a\n")
    with pytest.raises(UserError, match=r"index 3 is past the end of a list of 1 \(use 1 to append\)"):
        load_config(path, ["data.datasets.3.path=z"])


def test_override_value_can_be_a_yaml_list():
    config = load_config(None, ["data.datasets=[{path: a}, {path: b, weight: 3}]"])
    assert [(d.path, d.weight) for d in config.data.datasets] == [("a", 1.0), ("b", 3.0)]


def test_unknown_key_suggests_the_nearest_valid_key():
    with pytest.raises(UserError) as info:
        load_config(None, ["training.lerning_rate=1e-4"])
    assert str(info.value) == ("override 'training.lerning_rate=1e-4': unknown key "
                               "training.lerning_rate — did you mean training.learning_rate?")


def test_unknown_key_in_a_file_names_file_and_line(tmp_path):
    path = write(tmp_path, "run:\n  seed: 3\ntraining:\n  batch_size: 2\n  warmup_stepz: 10\n")
    with pytest.raises(UserError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:5: unknown key training.warmup_stepz — did you mean training.warmup_steps?"


def test_unknown_key_inside_a_list_item(tmp_path):
    path = write(tmp_path, "data:\n  datasets:\n    - path: a\n      wieght: 2\n")
    with pytest.raises(UserError, match=r":4: unknown key data.datasets.0.wieght — did you mean data.datasets.0.weight\?"):
        load_config(path)


def test_misplaced_key_points_to_its_section():
    with pytest.raises(UserError, match="unknown key training.seq_len — did you mean data.seq_len or prep.seq_len\\?"):
        load_config(None, ["training.seq_len=128"])


def test_bad_type_names_key_value_and_source(tmp_path):
    path = write(tmp_path, "training:\n  batch_size: many\n")
    with pytest.raises(UserError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}:2: config key training.batch_size:")
    assert "'many'" in message


def test_bad_choice_lists_the_allowed_values():
    with pytest.raises(UserError, match="training.lr_schedule: Input should be 'cosine', 'constant' or 'wsd'"):
        load_config(None, ["training.lr_schedule=linear"])


def test_cross_field_checks_name_the_keys():
    with pytest.raises(UserError, match="give only one training length, got training.max_steps and training.epochs"):
        load_config(None, ["training.max_steps=10", "training.epochs=2"])
    with pytest.raises(UserError, match=r"training.effective_batch_size \(12\) must be a multiple of training.batch_size \(8\)"):
        load_config(None, ["training.effective_batch_size=12"])


def test_effective_batch_size_derives_accumulation():
    config = load_config(None, ["training.batch_size=2", "training.effective_batch_size=8"])
    assert config.training.accumulation_steps == 4


def test_overrides_beat_the_file(tmp_path):
    path = write(tmp_path, "training:\n  batch_size: 2\n  learning_rate: 3.0e-4\n")
    config = load_config(path, ["training.batch_size=16"])
    assert config.training.batch_size == 16
    assert config.training.learning_rate == pytest.approx(3e-4)


@pytest.mark.parametrize("text, fragment", [
    ("training: [1, 2\n", "invalid YAML"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("run:\n  seed: 1\nrun:\n  seed: 2\n", ":3: duplicate key run"),
])
def test_malformed_files(tmp_path, text, fragment):
    with pytest.raises(UserError, match=fragment):
        load_config(write(tmp_path, text))


def test_missing_file_and_malformed_override(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="not of the form key=value"):
        load_config(None, ["training.batch_size"])


def test_resolved_config_round_trips(tmp_path):
    config = load_config(None, ["training.max_steps=7", "data.datasets.0.path=shards", "run.name=x"])
    saved = save_resolved_config(config, tmp_path / "run")
    assert saved == tmp_path / "run" / "config.yaml"
    again = load_config(saved)
    assert again == config
    assert dump_config(again) == saved.read_text()


def test_diff_configs_lists_changed_keys():
    a = load_config(None, ["training.max_steps=7"]).model_dump(mode="json")
    b = load_config(None, ["training.max_steps=8", "run.seed=2"]).model_dump(mode="json")
    assert diff_configs(a, b) == ["run.seed", "training.max_steps"]


def test_compile_takes_true_false_or_auto_and_says_so(tmp_path):
    assert load_config().training.compile == "auto"
    assert load_config(write(tmp_path, "training:\n  compile: false\n")).training.compile is False
    path = write(tmp_path, "training:\n  compile: sometimes\n")
    with pytest.raises(UserError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:2: training.compile must be true, false or auto (got 'sometimes')"
