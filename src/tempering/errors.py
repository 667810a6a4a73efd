"""The one exception type for mistakes a user can fix (DESIGN.md, "Errors").

The CLI turns a `UserError` into one line on stderr and exit status 2, with no
traceback. Everything else is a bug and keeps its traceback.
"""

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with the user's input: bad config, missing file, mismatch."""

    def __init__(self, message: str, *, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)
