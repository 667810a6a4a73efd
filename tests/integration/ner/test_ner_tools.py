"""`temper tag`, `temper import` of BERT/DistilBERT directories into NER training, and refusals for encoders."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import REPO_ROOT, assert_user_error, run_temper
from tests.integration.ner.conftest import NER_RUN

transformers = pytest.importorskip("transformers")


def test_tag_prints_entities_of_a_text_and_tags_jsonl_rows(ner_run, ner_data, tmp_path):
    shown = run_temper("tag", "--checkpoint", ner_run, "--text", "Grace Hopper joined Mozilla in 1999.", check=True)
    assert "entities" in shown.stdout and "characters" in shown.stdout
    rows = tmp_path / "rows.jsonl"
    gold = json.loads(ner_data["docs"]["val"].read_text(encoding="utf-8").splitlines()[0])
    rows.write_text(json.dumps(gold) + "\n" + json.dumps({"text": "Alan Turing visited Tokyo."}) + "\n")
    run_temper("tag", "--checkpoint", ner_run, "--input", rows, "--output", tmp_path / "out.jsonl", check=True)
    first, second = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert first["tokens"] == gold["tokens"] and first["gold_tags"] == gold["ner_tags"]
    assert len(first["ner_tags"]) == len(gold["tokens"])
    for entity in first["entities"]:
        assert entity["text"] == " ".join(gold["tokens"][entity["start"]:entity["end"]])
    assert second["tokens"] == ["Alan", "Turing", "visited", "Tokyo", "."]
    for entity in second["entities"]:
        assert entity["text"] == "Alan Turing visited Tokyo."[entity["start"]:entity["end"]]


def test_encoders_are_refused_where_a_decoder_is_needed(mlm_backbone, ner_data, tmp_path):
    assert_user_error(run_temper("tag", "--checkpoint", mlm_backbone, "--text", "x"),
                      "not a token-classification checkpoint")
    assert_user_error(run_temper("generate", "--checkpoint", mlm_backbone, "--prompt", "x"),
                      "does not generate text")
    assert_user_error(run_temper("sft", "--checkpoint", mlm_backbone, "--data", ner_data["docs"]["train"],
                                 "--save-dir", tmp_path / "sft", "--max-steps", "1"), "chat tuning needs a decoder")
    assert not (tmp_path / "sft").exists()


def bert_directory(path, ner_data):
    """A tiny BERT masked LM with its own WordPiece tokenizer, saved as transformers saves it."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    texts = [" ".join(json.loads(line)["tokens"]) for line in ner_data["docs"]["train"].read_text().splitlines()]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                                cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(path)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    model = transformers.BertForMaskedLM(config).eval()
    model.save_pretrained(path)
    return model, fast


def test_a_bert_directory_imports_as_distilbert_and_fine_tunes_for_ner(ner_data, tmp_path):
    bert, tokenizer = bert_directory(tmp_path / "bert", ner_data)
    run_temper("import", "--from", tmp_path / "bert", "--output", tmp_path / "ckpt", check=True)
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert (config["model_type"], config["architectures"]) == ("distilbert", ["DistilBertForMaskedLM"])
    imported = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "ckpt").eval()
    ids = torch.tensor([tokenizer("Grace Hopper joined Mozilla .")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(imported(ids).logits, bert(ids).logits, atol=1e-5, rtol=0)
    run = tmp_path / "ner"
    run_temper("post-train", "--task", "ner", "--checkpoint", tmp_path / "ckpt", "--new-dataset",
               ner_data["docs"]["train"], "--val-data", ner_data["docs"]["val"], "--save-dir", run,
               "--max-steps", "3", *NER_RUN, check=True)
    final = json.loads((run / "final" / "config.json").read_text())
    assert final["architectures"] == ["DistilBertForTokenClassification"] and "B-PER" in final["label2id"]
    assert transformers.AutoTokenizer.from_pretrained(run / "final").cls_token == "[CLS]"


def test_the_example_configs_run_two_steps(workspace, ner_data, tmp_path):
    demo = tmp_path / "demo"
    (demo / "shards").mkdir(parents=True)
    (demo / "tokenizer").symlink_to(workspace / "tok")
    (demo / "shards" / "prose").symlink_to(workspace / "shards")
    short = ["training.max_steps=2", "training.eval_max_batches=1", "training.save_steps=null"]
    run_temper("pretrain", "--config", REPO_ROOT / "configs" / "mlm.yaml", *short, cwd=tmp_path, check=True)
    data = [f"data.datasets.0.path={ner_data['docs']['train']}", f"data.val_data.0.path={ner_data['docs']['val']}"]
    run_temper("post-train", "--config", REPO_ROOT / "configs" / "ner.yaml", *short, *data, "training.epochs=null", "training.eval_steps=1",
               cwd=tmp_path, check=True)
    summary = json.loads((demo / "runs" / "ner" / "summary.json").read_text())
    assert summary["final_step"] == 2 and summary["best_metric"] == "f1"
