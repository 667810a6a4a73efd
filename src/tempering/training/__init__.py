"""The training loop, objectives, optimiser and schedules, recovery."""
