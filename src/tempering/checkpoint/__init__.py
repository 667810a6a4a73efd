"""Checkpoint save / load / resume / retention / path resolution."""
