"""JSON files: read one that must hold an object (failures become one UserError line), write one atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tempering.errors import UserError

USER_FILE_INVALID = "{file} is not valid JSON ({error}); fix or delete it"
USER_FILE_NOT_OBJECT = "{file} must hold a JSON object; fix or delete it"


def read_json_object(file: Path, *, invalid: str = USER_FILE_INVALID, not_object: str = USER_FILE_NOT_OBJECT) -> dict:
    """Parse `file` as a JSON object; `invalid` / `not_object` are the error templates ({file}, {error})."""
    try:
        value = json.loads(Path(file).read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(invalid.format(file=file, error=error)) from error
    if not isinstance(value, dict):
        raise UserError(not_object.format(file=file))
    return value


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to a temp file and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=2)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())
    tmp.replace(path)
