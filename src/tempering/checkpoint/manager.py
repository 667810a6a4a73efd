"""Where a run's checkpoints go, how many periodic ones are kept, and which one to resume from."""

from pathlib import Path

from tempering.checkpoint.atomic import recover_interrupted_saves, remove_dir_atomically
from tempering.checkpoint.io import read_meta, save_checkpoint
from tempering.checkpoint.paths import (
    BEST_DIR,
    FINAL_DIR,
    PERIODIC_DIR,
    TRAINER_STATE_FILE,
    newest_periodic,
    periodic_checkpoints,
    step_dir_name,
)
from tempering.errors import UserError


class CheckpointManager:
    """Write a run's periodic, best and final checkpoints and find the one to resume from.

    At startup call recover() once, then latest_resumable(). The save_* methods take the
    keyword arguments of io.save_checkpoint (weights, hf_config, meta, trainer_state,
    tokenizer_dir) and return the checkpoint's path.
    """

    def __init__(self, run_dir: str | Path, save_total_limit: int = 1):
        self.run_dir = Path(run_dir)
        if save_total_limit < 1:
            raise ValueError(f"save_total_limit must be at least 1, got {save_total_limit}")
        self.save_total_limit = save_total_limit
        _check_can_be_dir(self.run_dir)

    def recover(self) -> list[str]:
        """Repair what a killed save left behind; return one line per repair."""
        return recover_interrupted_saves(self.run_dir)

    def save_periodic(self, step: int, **payload) -> Path:
        """Write checkpoints/step-N, then delete the oldest beyond save_total_limit."""
        meta = payload.pop("meta")
        if meta.get("step", step) != step:
            raise ValueError(f"meta step {meta['step']} differs from the periodic step {step}")
        target = self.run_dir / PERIODIC_DIR / step_dir_name(step)
        previous = newest_periodic(self.run_dir)
        save_checkpoint(target, meta={**meta, "step": step}, previous=previous, **payload)
        self._prune(keep=target)
        return target

    def save_best(self, **payload) -> Path:
        """Write best/, replacing the previous best."""
        return save_checkpoint(self.run_dir / BEST_DIR, **payload)

    def save_final(self, **payload) -> Path:
        """Write final/, replacing any earlier final."""
        return save_checkpoint(self.run_dir / FINAL_DIR, **payload)

    def latest_resumable(self) -> Path | None:
        """Return the checkpoint with trainer_state.pt at the highest step, None for a fresh run.

        Compares periodic, best and final by the step in their meta.json. Raises UserError
        when the run has checkpoints but none can be resumed, so a fresh start never
        overwrites them.
        """
        existing = self._all_checkpoints()
        resumable = [path for path in existing if (path / TRAINER_STATE_FILE).is_file()]
        if existing and not resumable:
            names = ", ".join(str(path.relative_to(self.run_dir)) for path in existing)
            raise UserError(
                f"{self.run_dir} holds checkpoints ({names}) but none has {TRAINER_STATE_FILE}, "
                "so training cannot resume; choose a new save_dir"
            )
        if not resumable:
            return None
        # On equal steps the order of _all_checkpoints decides: final, then periodic, then best.
        ranked = [(read_meta(path)["step"], -rank, path) for rank, path in enumerate(resumable)]
        return max(ranked)[2]

    def _all_checkpoints(self) -> list[Path]:
        """List existing checkpoints: final, periodic (newest first), best."""
        periodic = [path for _, path in reversed(periodic_checkpoints(self.run_dir))]
        named = [self.run_dir / FINAL_DIR, *periodic, self.run_dir / BEST_DIR]
        return [path for path in named if path.is_dir()]

    def _prune(self, keep: Path) -> None:
        """Delete the oldest periodic checkpoints beyond the limit, never `keep`."""
        others = [path for _, path in periodic_checkpoints(self.run_dir) if path != keep]
        surplus = len(others) + 1 - self.save_total_limit
        for path in others[: max(surplus, 0)]:
            remove_dir_atomically(path)


def _check_can_be_dir(run_dir: Path) -> None:
    """Raise UserError when run_dir, or a folder above it, is a file."""
    for path in (run_dir, *run_dir.parents):
        if path.is_dir():
            return
        if path.exists():
            what = f"save_dir {run_dir}" if path == run_dir else f"save_dir {run_dir}: {path}"
            raise UserError(f"{what} is a file; set save_dir to a directory")
