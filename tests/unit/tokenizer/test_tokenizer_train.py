"""Training a byte-level BPE tokenizer: fixed special ids, exact round trips, safe saving."""

import json

import pytest

from tempering.errors import UserError
from tempering.tokenizer import BOS, EOS, PAD, SPECIAL_TOKENS, load_tokenizer, train_tokenizer
from tempering.tokenizer.special import MIN_VOCAB_SIZE

TINY_VOCAB_SIZE = 400


def test_special_tokens_have_fixed_ids_and_encode_as_one_token(tiny_bundle):
    assert (tiny_bundle.bos_id, tiny_bundle.eos_id, tiny_bundle.pad_id) == (0, 1, 2)
    assert SPECIAL_TOKENS[:3] == (BOS, EOS, PAD) and len(SPECIAL_TOKENS) == 26
    assert SPECIAL_TOKENS[-1] == "<|reserved_7|>"
    for index, token in enumerate(SPECIAL_TOKENS):
        assert tiny_bundle.tokenizer.token_to_id(token) == index
        assert tiny_bundle.encode(token) == [index]
        assert tiny_bundle.decode([index]) == token
    assert tiny_bundle.vocab_size == TINY_VOCAB_SIZE


def test_encode_decode_round_trips_unseen_real_text(tiny_bundle, held_out_texts):
    for name, text in held_out_texts.items():
        ids = tiny_bundle.encode(text)
        assert tiny_bundle.decode(ids) == text, name
        assert max(ids) < tiny_bundle.vocab_size


def test_encode_adds_no_bos_or_eos_and_learns_merges(tiny_bundle, held_out_texts):
    ids = tiny_bundle.encode("the value of the expression")
    assert tiny_bundle.bos_id not in ids and tiny_bundle.eos_id not in ids
    prose = held_out_texts["prose"]
    # Merges learned from real prose compress it well below one token per byte.
    assert len(tiny_bundle.encode(prose)) < 0.6 * len(prose.encode("utf-8"))


def test_encode_batch_equals_encode_on_each(tiny_bundle, held_out_texts):
    texts = list(held_out_texts.values())
    assert tiny_bundle.encode_batch(texts) == [tiny_bundle.encode(text) for text in texts]


def test_decode_can_skip_special_tokens(tiny_bundle):
    ids = [tiny_bundle.bos_id, *tiny_bundle.encode("hello"), tiny_bundle.eos_id]
    assert tiny_bundle.decode(ids) == f"{BOS}hello{EOS}"
    assert tiny_bundle.decode(ids, skip_special_tokens=True) == "hello"


def test_saved_directory_holds_the_hf_files(tiny_tokenizer_dir, tiny_bundle):
    assert sorted(p.name for p in tiny_tokenizer_dir.iterdir()) == [
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    config = json.loads((tiny_tokenizer_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (config["bos_token"], config["eos_token"], config["pad_token"]) == (BOS, EOS, PAD)
    assert config["add_bos_token"] is False and config["model_max_length"] >= 10**12
    assert config["tempering_fingerprint"] == tiny_bundle.fingerprint
    assert json.loads((tiny_tokenizer_dir / "tokenizer.json").read_text())["post_processor"] is None
    # No leftover staging directories beside the output.
    assert [p.name for p in tiny_tokenizer_dir.parent.iterdir()] == ["tok"]


def test_vocab_size_must_exceed_specials_plus_bytes(tmp_path, training_texts):
    with pytest.raises(UserError, match=f"vocab_size {MIN_VOCAB_SIZE - 1} is too small.*{MIN_VOCAB_SIZE}"):
        train_tokenizer(training_texts, MIN_VOCAB_SIZE - 1, tmp_path / "tok", show_progress=False)
    assert not (tmp_path / "tok").exists()
    assert train_tokenizer(["abc abd"], MIN_VOCAB_SIZE, tmp_path / "tok", show_progress=False).vocab_size >= 282


def test_empty_corpus_is_rejected(tmp_path):
    with pytest.raises(UserError, match="no text"):
        train_tokenizer(iter(["", ""]), 300, tmp_path / "tok", show_progress=False)
    assert not (tmp_path / "tok").exists()


def test_refuses_to_write_over_foreign_files(tmp_path):
    output = tmp_path / "tok"
    output.mkdir()
    (output / "model.bin").write_text("precious")
    with pytest.raises(UserError, match=r"tok already holds files that are not a Tempering tokenizer \(model\.bin\)"):
        train_tokenizer(["some text"], 300, output, show_progress=False, overwrite=True)
    assert [p.name for p in output.iterdir()] == ["model.bin"]


def test_overwriting_a_previous_tokenizer_needs_overwrite(tmp_path, training_texts):
    output = tmp_path / "tok"
    first = train_tokenizer(training_texts, 300, output, show_progress=False)
    with pytest.raises(UserError, match="already holds a tokenizer"):
        train_tokenizer(training_texts, 350, output, show_progress=False)
    assert load_tokenizer(output).fingerprint == first.fingerprint
    second = train_tokenizer(training_texts, 350, output, show_progress=False, overwrite=True)
    assert load_tokenizer(output).fingerprint == second.fingerprint != first.fingerprint
    assert load_tokenizer(output).vocab_size == 350
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]


def test_training_is_deterministic(tmp_path, training_texts):
    first = train_tokenizer(training_texts, 350, tmp_path / "a", show_progress=False)
    second = train_tokenizer(iter(training_texts), 350, tmp_path / "b", show_progress=False,
                             length=len(training_texts))
    assert first.fingerprint == second.fingerprint
    assert (tmp_path / "a/tokenizer.json").read_bytes() == (tmp_path / "b/tokenizer.json").read_bytes()
