"""Which sentences a NER run trains and validates on: post-training's fresh val:new split of the new data."""

import json
from types import SimpleNamespace

from tempering.config.schema import Config
from tempering.training.chat_setup import split_items
from tempering.training.ner_data import read_ner_sentences


def new_data(tmp_path, count=200):
    path = tmp_path / "new.jsonl"
    path.write_text("".join(json.dumps({"tokens": [f"w{i}", "visited", "Paris"], "ner_tags": ["O", "O", "B-GPE"]})
                            + "\n" for i in range(count)))
    return path


def read(path, tmp_path, stage="post_train", seed=1337, **data):
    config = Config.model_validate({"stage": stage, "run": {"seed": seed},
                                    "data": {"datasets": [{"path": str(path)}], **data}})
    source = SimpleNamespace(path=tmp_path / "source" / "best")  # no run dir beside it: no val:original
    return read_ner_sentences(config, source if stage == "post_train" else None)


def words(sentences):
    return [s.words[0] for s in sentences]


def test_val_new_is_a_seeded_ratio_of_the_new_data_independent_of_run_seed(tmp_path):
    path = new_data(tmp_path)
    everything = read(path, tmp_path, create_new_validation=False).train
    held = read(path, tmp_path, validation_ratio=0.25, random_seed=3)
    expected_train, expected_val = split_items(everything, 0.25, 3)
    assert words(held.val) == words(expected_val) and words(held.train) == words(expected_train)
    assert 20 < len(held.val) < 80 and not set(words(held.val)) & set(words(held.train))
    assert words(read(path, tmp_path, seed=99, validation_ratio=0.25, random_seed=3).val) == words(held.val)
    assert words(read(path, tmp_path, validation_ratio=0.25, random_seed=4).val) != words(held.val)


def test_defaults_follow_val_split_and_run_seed_and_false_keeps_every_sentence(tmp_path):
    path = new_data(tmp_path)
    everything = read(path, tmp_path, create_new_validation=False)
    assert len(everything.train) == 200 and everything.val == []
    default = read(path, tmp_path, seed=5, val_split=0.2)
    assert words(default.val) == words(split_items(everything.train, 0.2, 5)[1])
    # Pretraining ignores the post-training keys.
    pretrain = read(path, tmp_path, stage="pretrain", seed=5, val_split=0.2, create_new_validation=False,
                    validation_ratio=0.5)
    assert words(pretrain.val) == words(default.val)
