"""Tokenizer training, loading, saving and fingerprinting (HF `tokenizers`)."""
