"""`temper import`: tiny random Llama, Mistral, Qwen2 and Qwen3 models made by transformers itself.

Each goes HF dir → `temper import` → logits equal transformers' → `temper post-train` 5 steps on
the sample corpus → the result loads back in transformers, as its own class, with equal logits.
"""

from __future__ import annotations

import json

import pytest
import torch

from tempering.checkpoint.model_loading import load_model
from tests.conftest import assert_user_error, run_temper

transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

VOCAB = 384
DIMS = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, bos_token_id=0, eos_token_id=1, pad_token_id=2)
# What each family changes against plain Llama; one of them is saved as several shards with an index.
FAMILIES = {
    "llama": dict(tie_word_embeddings=False),
    "mistral": dict(sliding_window=None),
    "qwen2": dict(tie_word_embeddings=True, rope_theta=1e6),
    "qwen3": dict(head_dim=32, attention_bias=False),
}
SHARDED = "qwen2"


@pytest.fixture(scope="module")
def foreign_tokenizer(workspace, tmp_path_factory):
    """A byte-level BPE tokenizer that is not ours: <s>, </s>, <pad> and no chat tokens (like a base model's)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - 16, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    lines = (workspace / "corpus" / "prose" / "train.jsonl").read_text().splitlines()[:200]
    tokenizer.train_from_iterator((json.loads(line)["text"] for line in lines), trainer)
    directory = tmp_path_factory.mktemp("foreign_tokenizer")
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                         pad_token="<pad>").save_pretrained(directory)
    return directory


def hf_dir_for(kind: str, tokenizer_dir, root):
    """Save a tiny random model of `kind` with transformers, plus the tokenizer, as a user's HF directory."""
    config = transformers.AutoConfig.for_model(kind, **DIMS, **FAMILIES[kind])
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    directory = root / f"hf-{kind}"
    model.save_pretrained(directory, max_shard_size="100KB" if kind == SHARDED else "1GB")
    transformers.AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(directory)
    return model, directory


def logits_of(model, input_ids):
    with torch.no_grad():
        output = model(input_ids)
    return output.logits if hasattr(output, "logits") else output


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_import_matches_transformers_and_post_trains_back_into_it(kind, foreign_tokenizer, workspace, tmp_path):
    theirs, hf_dir = hf_dir_for(kind, foreign_tokenizer, tmp_path)
    if kind == SHARDED:
        assert (hf_dir / "model.safetensors.index.json").is_file()
    checkpoint = tmp_path / "imported"
    run_temper("import", "--from", hf_dir, "--output", checkpoint, check=True)
    meta = json.loads((checkpoint / "meta.json").read_text())
    assert (meta["family"], meta["model_type"], meta["step"]) == ("llama", kind, 0)
    assert json.loads((checkpoint / "generation_config.json").read_text())["eos_token_id"] == 1

    input_ids = torch.randint(3, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))
    imported = load_model(checkpoint)
    assert imported.tokenizer.eos_id == 1 and imported.arch.hf_model_type == kind
    assert (logits_of(imported.model, input_ids) - logits_of(theirs, input_ids)).abs().max() <= 1e-5

    run = tmp_path / "post"
    run_temper("post-train", "--checkpoint", checkpoint, "--new-dataset", workspace / "corpus" / "prose" / "val.jsonl",
               "--save-dir", run, "--max-steps", 5, "--seq-len", 32, "--batch-size", 2, "--lr", "1e-3",
               "training.log_steps=1", "training.eval_max_batches=2", check=True)
    trained = load_model(run / "final")
    assert not torch.equal(trained.model.lm_head.weight, imported.model.lm_head.weight)  # it did train
    back = transformers.AutoModelForCausalLM.from_pretrained(run / "final").eval()
    assert type(back).__name__ == type(theirs).__name__
    assert (logits_of(trained.model, input_ids) - logits_of(back, input_ids)).abs().max() <= 1e-5


def test_an_imported_base_model_takes_sft_with_the_chat_tokens_added(foreign_tokenizer, workspace, tmp_path):
    _, hf_dir = hf_dir_for("qwen3", foreign_tokenizer, tmp_path)
    run_temper("import", "--from", hf_dir, "--output", tmp_path / "imported", check=True)
    result = run_temper("sft", "--checkpoint", tmp_path / "imported", "--data",
                        workspace / "corpus" / "chat" / "chat_val.jsonl", "--save-dir", tmp_path / "sft",
                        "--max-steps", 2, "--seq-len", 128, "--batch-size", 2, "--val-split", 0, check=True)
    assert "which the tokenizer lacked: added" in result.stderr
    final = tmp_path / "sft" / "final"
    tokens = transformers.AutoTokenizer.from_pretrained(final)
    im_end = tokens.convert_tokens_to_ids("<|im_end|>")
    assert json.loads((final / "generation_config.json").read_text())["eos_token_id"] == [1, im_end]
    back = transformers.AutoModelForCausalLM.from_pretrained(final)
    assert type(back).__name__ == "Qwen3ForCausalLM" and back.config.vocab_size == max(VOCAB, len(tokens))


@pytest.mark.parametrize(("change", "named"), [
    ({"model_type": "gpt2"}, "model_type"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling"),
    ({"sliding_window": 16}, "sliding_window"),
])
def test_what_cannot_be_represented_is_refused_naming_the_key(change, named, foreign_tokenizer, tmp_path):
    _, hf_dir = hf_dir_for("mistral", foreign_tokenizer, tmp_path)
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, **change}))
    result = run_temper("import", "--from", hf_dir, "--output", tmp_path / "out")
    assert_user_error(result, "config.json", named)
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_non_empty_output_is_never_touched(foreign_tokenizer, tmp_path):
    _, hf_dir = hf_dir_for("llama", foreign_tokenizer, tmp_path)
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    assert_user_error(run_temper("import", "--from", hf_dir, "--output", output), "not empty")
    assert [p.name for p in output.iterdir()] == ["notes.txt"]
