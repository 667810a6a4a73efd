"""Write and replace directories so that a crash at any instant leaves a complete one.

A directory is first written under a temporary sibling `.tmp-<name>-<pid>`, every file and
the directory itself fsynced, then renamed into place. `rename` cannot replace a non-empty
directory, so replacing one takes two renames: the old one is parked as `.old-<name>`,
the new one renamed in, then the parked one deleted. At every instant `<name>` or
`.old-<name>` is complete, and `recover_interrupted_saves` puts back whichever survived a
`kill -9`. Deleting parks the directory as `.del-<name>` first, so a half-deleted
directory never looks like a checkpoint.

Written by hand because the maintained atomic-write libraries handle single files, not
directories.
"""

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from tempering.checkpoint.paths import INFERENCE_DIR, OLD_PREFIX, PERIODIC_DIR
from tempering.errors import UserError
from tempering.ranks import is_main_process

TMP_PREFIX = ".tmp-"
DEL_PREFIX = ".del-"


def fsync_file(path: Path) -> None:
    """Flush a written file's data to disk."""
    with open(path, "r+b") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (creations and renames) to disk."""
    if os.name != "posix":  # Windows cannot open a directory; NTFS journals renames itself.
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_dir_atomically(target: Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp_dir) to fill a fresh directory, then move it to target, replacing it."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise UserError(
            f"{target} is a file; a checkpoint must be a directory (move the file away)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f"{TMP_PREFIX}{target.name}-{os.getpid()}"
    parked = target.parent / f"{OLD_PREFIX}{target.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        fsync_dir(tmp)
        _swap_into_place(tmp, target, parked)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if parked.is_dir() and not target.exists():
            parked.rename(target)  # the swap was half done: put the old one back
        raise
    shutil.rmtree(parked, ignore_errors=True)
    return target


def _swap_into_place(tmp: Path, target: Path, parked: Path) -> None:
    """Rename tmp to target, parking an existing target as `parked` first."""
    if target.exists():
        # A parked copy left while target exists is stale: target is the complete newer one.
        shutil.rmtree(parked, ignore_errors=True)
        target.rename(parked)
    tmp.rename(target)
    fsync_dir(target.parent)


def remove_dir_atomically(path: Path) -> None:
    """Delete a directory so that no half-deleted copy is ever visible under its name."""
    doomed = path.parent / f"{DEL_PREFIX}{path.name}"
    shutil.rmtree(doomed, ignore_errors=True)
    path.rename(doomed)
    fsync_dir(path.parent)
    shutil.rmtree(doomed)


def recover_interrupted_saves(run_dir: Path) -> list[str]:
    """Repair what a killed save left in a run dir; return one line per repair.

    Call at startup, before any save, while no other process writes to this run dir. Under a
    launcher only rank 0 repairs (the others must not race it).
    """
    if not is_main_process():
        return []
    repairs = []
    for folder in (Path(run_dir), Path(run_dir) / PERIODIC_DIR, Path(run_dir) / INFERENCE_DIR):
        if folder.is_dir():
            repairs += _recover_folder(folder)
    return repairs


def _recover_folder(folder: Path) -> list[str]:
    """Restore parked directories and delete temporary ones directly inside folder."""
    repairs = []
    for entry in sorted(folder.iterdir()):
        if not entry.is_dir():
            continue
        if entry.name.startswith(OLD_PREFIX):
            target = folder / entry.name[len(OLD_PREFIX) :]
            if target.exists():
                shutil.rmtree(entry)
                repairs.append(f"removed {entry}, left behind after {target} was replaced")
            else:
                entry.rename(target)
                repairs.append(f"restored {target} from {entry}: a save was interrupted")
        elif entry.name.startswith((TMP_PREFIX, DEL_PREFIX)):
            shutil.rmtree(entry)
            repairs.append(f"removed {entry}, an unfinished save or delete")
    if repairs:
        fsync_dir(folder)
    return repairs
