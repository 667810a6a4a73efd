"""How `temper` fails: the user-error exception, exit statuses, environment errors, crash reports (DESIGN.md, "Errors").

Exit statuses: 0 success; 1 an unexpected error — a bug — reported in one line that names a
file holding the full traceback; 2 a mistake the user can fix (`UserError`, a bad flag, an
environment failure such as a full disk or a file-size limit), one line naming what and
where; 75 a run stopped by a signal after writing a checkpoint (re-run to resume); 130
interrupted (Ctrl-C).
"""

from __future__ import annotations

import errno
import os
import tempfile
import time
import traceback
from pathlib import Path

EXIT_BUG = 1
EXIT_USER_ERROR = 2
EXIT_PREEMPTED = 75  # sysexits' EX_TEMPFAIL: stopped on request after checkpointing; retrying resumes
EXIT_INTERRUPTED = 130

# What the machine refused, not what Tempering got wrong: the user frees space, raises a limit,
# picks a writable place. Each maps to the advice printed with it.
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "free disk space and re-run (a training run resumes from its last checkpoint)",
    errno.EDQUOT: "free space within your quota and re-run",
    errno.EFBIG: "the file-size limit (`ulimit -f`) is lower than this output; raise it",
    errno.EROFS: "the file system is read-only; choose a writable location",
    errno.EACCES: "choose a location you may write to, or fix its permissions",
    errno.EPERM: "choose a location you may write to, or fix its permissions",
    errno.ELOOP: "a symbolic link points back into itself; remove or fix it",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.EMFILE: "too many open files: raise `ulimit -n`",
}


class UserError(Exception):
    """A problem with the user's input: bad config, missing file, mismatch."""

    def __init__(self, message: str, *, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


def environment_error(exc: BaseException) -> OSError | None:
    """The OSError the machine raised behind `exc` (full disk, file-size limit, permissions), if that is the cause."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def describe_environment_error(error: OSError) -> str:
    """One line: the file, what the system said, what to do."""
    where = f" {error.filename}" if error.filename else ""
    return f"cannot use{where}: {error.strerror or os.strerror(error.errno)}; {ENVIRONMENT_ERRNOS[error.errno]}"


def write_crash_report(exc: BaseException, folder: Path | None = None) -> Path:
    """Write `exc`'s full traceback to a file (in `folder` when it is a writable directory, else the temp dir)."""
    name = f"temper-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    text = "".join(traceback.format_exception(exc))
    for directory in ([folder] if folder is not None else []) + [Path(tempfile.gettempdir())]:
        try:
            path = Path(directory) / name
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    raise exc
