"""`temper submit`: run a config as a SLURM batch job that survives wall time, preemption and crashes."""
