"""Tokenizer training, loading, saving and fingerprinting (HF `tokenizers`)."""

from tempering.tokenizer.bundle import TokenizerBundle, load_tokenizer
from tempering.tokenizer.fingerprint import tokenizer_fingerprint
from tempering.tokenizer.special import BOS, EOS, PAD, SPECIAL_TOKENS
from tempering.tokenizer.train import train_tokenizer

__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "SPECIAL_TOKENS",
    "TokenizerBundle",
    "load_tokenizer",
    "tokenizer_fingerprint",
    "train_tokenizer",
]
