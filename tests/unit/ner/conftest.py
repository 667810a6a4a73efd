"""Tokenizers for the NER tests: a byte-level BPE (Tempering's own kind) and a BERT WordPiece, trained on real prose."""

from pathlib import Path
from pydoc_data.topics import topics

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from tempering.tokenizer import TokenizerBundle, load_tokenizer, train_tokenizer

TEXTS = [topics[name] for name in sorted(topics)[:40]]


@pytest.fixture(scope="session")
def bpe_dir(tmp_path_factory) -> Path:
    """A 400-token byte-level BPE tokenizer directory, trained once."""
    output = tmp_path_factory.mktemp("ner-tok") / "bpe"
    train_tokenizer(TEXTS, 400, output, show_progress=False)
    return output


@pytest.fixture
def bpe(bpe_dir) -> TokenizerBundle:
    """The byte-level tokenizer, freshly loaded."""
    return load_tokenizer(bpe_dir)


@pytest.fixture(scope="session")
def wordpiece_dir(tmp_path_factory) -> Path:
    """A lower-casing, accent-stripping BERT WordPiece tokenizer saved as transformers does ([CLS]/[SEP]/[MASK])."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(TEXTS, trainers.WordPieceTrainer(vocab_size=500, special_tokens=specials,
                                                                   show_progress=False))
    output = tmp_path_factory.mktemp("ner-tok") / "wordpiece"
    output.mkdir()
    tokenizer.save(str(output / "tokenizer.json"))
    (output / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "BertTokenizerFast", "cls_token": "[CLS]", "sep_token": "[SEP]", '
        '"pad_token": "[PAD]", "mask_token": "[MASK]", "unk_token": "[UNK]"}')
    return output


@pytest.fixture
def wordpiece(wordpiece_dir) -> TokenizerBundle:
    """The WordPiece tokenizer, freshly loaded."""
    return load_tokenizer(wordpiece_dir)
