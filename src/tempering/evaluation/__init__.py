"""Perplexity evaluation (later: the lm-eval bridge)."""
