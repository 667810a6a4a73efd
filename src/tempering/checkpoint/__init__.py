"""Checkpoint save / load / resume / retention / path resolution.

Modules: `io` (one checkpoint dir: save_checkpoint, load_checkpoint), `paths` (file names,
resolve_checkpoint for checkpoint or run dirs), `manager` (CheckpointManager: periodic,
best, final, retention, latest_resumable), `atomic` (crash-safe directory writes and
recover_interrupted_saves), `rng` (capture_rng_state, restore_rng_state).
"""
