"""Tempering: one toolkit for a language model's whole training life."""

import os

__version__ = "0.1.0"

# Before torch loads OpenMP: idle threads sleep instead of spinning, so a CPU shared with other
# jobs does not slow a run several-fold (docs/performance.md, "Data-parallel overhead"). A value the
# user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
