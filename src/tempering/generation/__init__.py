"""Sampling with a KV cache, and chat."""
