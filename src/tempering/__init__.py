"""Tempering: one toolkit for a language model's whole training life."""

__version__ = "0.1.0"
