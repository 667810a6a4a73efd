"""Loading tokenizers: clear errors, imported tokenizers, stable fingerprints, transformers parity."""

import json
import shutil

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from tempering.errors import UserError
from tempering.tokenizer import load_tokenizer, tokenizer_fingerprint


def test_load_accepts_directory_or_tokenizer_json(tiny_tokenizer_dir, tiny_bundle):
    from_file = load_tokenizer(tiny_tokenizer_dir / "tokenizer.json")
    assert from_file.fingerprint == tiny_bundle.fingerprint
    assert (from_file.bos_id, from_file.eos_id, from_file.pad_id) == (0, 1, 2)
    assert tiny_bundle.path == tiny_tokenizer_dir


def test_missing_directory_is_a_user_error_naming_it(tmp_path):
    with pytest.raises(UserError, match=r"nowhere does not exist.*temper tokenizer train"):
        load_tokenizer(tmp_path / "nowhere")


def test_directory_without_tokenizer_json_is_a_user_error(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(UserError, match=r"run is not a tokenizer directory: no tokenizer\.json"):
        load_tokenizer(tmp_path / "run")


def test_garbage_tokenizer_json_is_a_user_error(tmp_path):
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError, match=r"tok/tokenizer\.json is not a valid tokenizer\.json"):
        load_tokenizer(tmp_path / "tok")


def test_garbage_tokenizer_config_is_a_user_error(tmp_path, tiny_tokenizer_dir):
    shutil.copytree(tiny_tokenizer_dir, tmp_path / "tok")
    (tmp_path / "tok" / "tokenizer_config.json").write_text("[1,")
    with pytest.raises(UserError, match=r"tokenizer_config\.json is not valid JSON"):
        load_tokenizer(tmp_path / "tok")


def _save_imported(directory, config: dict | None) -> None:
    """An imported-style tokenizer: no Tempering specials, EOS named `</s>`."""
    tokenizer = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "</s>": 2, "[UNK]": 3}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["</s>"])
    directory.mkdir()
    tokenizer.save(str(directory / "tokenizer.json"))
    if config is not None:
        (directory / "tokenizer_config.json").write_text(json.dumps(config))


def test_imported_tokenizer_takes_eos_from_its_config(tmp_path):
    _save_imported(tmp_path / "plain", {"eos_token": "</s>"})
    bundle = load_tokenizer(tmp_path / "plain")
    assert (bundle.eos_id, bundle.bos_id, bundle.pad_id) == (2, None, None)
    assert bundle.encode("hello world</s>") == [0, 1, 2]
    _save_imported(tmp_path / "added_token", {"eos_token": {"content": "</s>", "__type": "AddedToken"}})
    assert load_tokenizer(tmp_path / "added_token").eos_id == 2


def test_imported_tokenizer_without_eos_is_a_user_error(tmp_path):
    _save_imported(tmp_path / "no_config", None)
    with pytest.raises(UserError, match=r"no_config/tokenizer\.json has no end-of-sequence token"):
        load_tokenizer(tmp_path / "no_config")
    _save_imported(tmp_path / "wrong_eos", {"eos_token": "<eos>"})
    with pytest.raises(UserError, match=r"'<eos>' is not in the vocabulary"):
        load_tokenizer(tmp_path / "wrong_eos")


def test_fingerprint_survives_save_load_and_json_reformatting(tmp_path, tiny_bundle):
    state = json.loads(tiny_bundle.tokenizer.to_str())
    compact = Tokenizer.from_str(json.dumps(state, separators=(",", ":")))
    assert tokenizer_fingerprint(compact) == tiny_bundle.fingerprint
    tiny_bundle.save(tmp_path / "copy")
    assert tiny_bundle.path == tmp_path / "copy"
    assert load_tokenizer(tmp_path / "copy").fingerprint == tiny_bundle.fingerprint
    assert len(tiny_bundle.fingerprint) == 16 and int(tiny_bundle.fingerprint, 16) >= 0


def test_fingerprint_changes_when_the_id_mapping_changes(tiny_bundle):
    state = json.loads(tiny_bundle.tokenizer.to_str())
    vocab = state["model"]["vocab"]
    last = max(vocab, key=vocab.get)
    assert "".join(state["model"]["merges"][-1]) == last  # the last merge made the last token
    state["model"]["merges"].pop()
    del vocab[last]
    assert tokenizer_fingerprint(Tokenizer.from_str(json.dumps(state))) != tiny_bundle.fingerprint
    # Same strings, two ids swapped: a different mapping, so a different fingerprint.
    state = json.loads(tiny_bundle.tokenizer.to_str())
    vocab = state["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    assert tokenizer_fingerprint(Tokenizer.from_str(json.dumps(state))) != tiny_bundle.fingerprint


def test_transformers_loads_the_directory_with_identical_ids(tiny_tokenizer_dir, tiny_bundle, held_out_texts):
    transformers = pytest.importorskip("transformers")
    for loader in (transformers.PreTrainedTokenizerFast, transformers.AutoTokenizer):
        hf = loader.from_pretrained(tiny_tokenizer_dir)
        assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (0, 1, 2)
        assert len(hf) == tiny_bundle.vocab_size
        for name, text in held_out_texts.items():
            ours = tiny_bundle.encode(text)
            assert hf(text)["input_ids"] == ours, (loader.__name__, name)
            assert hf.decode(ours) == text, (loader.__name__, name)
