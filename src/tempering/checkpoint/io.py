"""Save and load one checkpoint directory in the layout of DESIGN.md ("Checkpoint directory").

Files: model.safetensors (weights), config.json (HF model config), generation_config.json
(the tokens generation stops at), trainer_state.pt (everything a resume needs, readable
with `torch.load(weights_only=True)`), meta.json (a sidecar a person can read, naming the
model family) and the tokenizer files. Writing is atomic (atomic.py); a failed write
becomes one UserError that says the previous checkpoint is intact.
"""

import errno
import json
import os
import pickle
import re
import shutil
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePath

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from tempering import json_files
from tempering.checkpoint.atomic import fsync_file, write_dir_atomically
from tempering.checkpoint.paths import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_DIR,
    ADAPTER_WEIGHTS_FILE,
    CONFIG_FILE,
    GENERATION_CONFIG_FILE,
    META_FILE,
    SHARDED_DIR,
    TOKENIZER_FILES,
    TRAINER_STATE_FILE,
    WEIGHTS_FILE,
    Select,
    resolve_checkpoint,
)
from tempering.errors import UserError
from tempering.models.family import ModelFamily
from tempering.models.registry import family_of_checkpoint

# Keys every meta.json carries (DESIGN.md); the caller supplies them, missing ones are null.
META_KEYS = (
    "step",
    "epoch",
    "val_loss",
    "val_ppl",
    "source_checkpoint",
    "post_training",
    "tokenizer_fingerprint",
    "created_at",
    "model_type",
    "family",
)
REQUIRED_FILES = (WEIGHTS_FILE, CONFIG_FILE, META_FILE)  # a LoRA periodic checkpoint has an adapter instead of weights

# What torch.load(weights_only=True) accepts; anything else in trainer_state is a bug.
_PLAIN_LEAVES = (str, bytes, int, float, bool, type(None), torch.Size, torch.dtype, torch.device)


@dataclass(frozen=True)
class Checkpoint:
    """A validated checkpoint directory; weights and trainer state are read on demand."""

    path: Path
    hf_config: dict
    meta: dict

    @property
    def step(self) -> int:
        """Return the optimizer step the checkpoint was taken at."""
        return self.meta["step"]

    @property
    def has_trainer_state(self) -> bool:
        """Tell whether training can resume from this checkpoint."""
        return (self.path / TRAINER_STATE_FILE).is_file()

    @property
    def family(self) -> ModelFamily:
        """The model family this checkpoint holds (meta.json's `family`, else config.json's `model_type`)."""
        return family_of_checkpoint(self.hf_config, self.meta, where=str(self.path / CONFIG_FILE))

    def architecture(self):
        """The architecture config.json describes, as the checkpoint's family reads it."""
        return self.family.from_hf_config(self.hf_config, where=str(self.path / CONFIG_FILE))

    @property
    def generation_config(self) -> dict:
        """generation_config.json, or {} for checkpoints written without one."""
        file = self.path / GENERATION_CONFIG_FILE
        return read_json_object(file) if file.is_file() else {}

    @property
    def tokenizer_dir(self) -> Path | None:
        """Return the checkpoint dir when it holds tokenizer.json, else None."""
        return self.path if (self.path / TOKENIZER_FILES[0]).is_file() else None

    def load_weights(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """Read model.safetensors (or an FSDP run's sharded/ state) into a name → tensor dict on `device`."""
        if self.is_sharded:
            from tempering.checkpoint.sharded import read_sharded_weights

            return read_sharded_weights(self.path / SHARDED_DIR, device=str(device))
        file = self.path / WEIGHTS_FILE
        try:
            return load_file(file, device=str(device))
        except (SafetensorError, OSError) as exc:
            raise UserError(f"checkpoint {file} is corrupt or truncated: {exc}") from exc

    @property
    def has_weights(self) -> bool:
        """Whether the checkpoint holds the full model (a LoRA periodic checkpoint holds only its adapter)."""
        return (self.path / WEIGHTS_FILE).is_file() or self.is_sharded

    @property
    def is_sharded(self) -> bool:
        """Whether model and optimizer state are DCP shards (an FSDP run's periodic checkpoint), not safetensors."""
        return not (self.path / WEIGHTS_FILE).is_file() and (self.path / SHARDED_DIR).is_dir()

    @property
    def adapter_dir(self) -> Path | None:
        """Where its LoRA adapter files are: the checkpoint itself (periodic) or adapter/ (best, final)."""
        for folder in (self.path, self.path / ADAPTER_DIR):
            if (folder / ADAPTER_WEIGHTS_FILE).is_file():
                return folder
        return None

    def load_adapter(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """Read the LoRA adapter tensors (adapter_model.safetensors)."""
        if self.adapter_dir is None:
            raise UserError(f"checkpoint {self.path} holds no LoRA adapter ({ADAPTER_WEIGHTS_FILE})")
        file = self.adapter_dir / ADAPTER_WEIGHTS_FILE
        try:
            return load_file(file, device=str(device))
        except (SafetensorError, OSError) as exc:
            raise UserError(f"checkpoint {file} is corrupt or truncated: {exc}") from exc

    def load_trainer_state(self, map_location: str | torch.device = "cpu") -> dict:
        """Read trainer_state.pt with torch.load(weights_only=True)."""
        file = self.path / TRAINER_STATE_FILE
        if not file.is_file():
            raise UserError(
                f"checkpoint {self.path} has no {TRAINER_STATE_FILE}, so training cannot resume "
                "from it; start from it as a source checkpoint instead"
            )
        try:
            return torch.load(file, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as exc:
            if "weights only" not in str(exc).lower():
                raise UserError(f"checkpoint {file} is corrupt or truncated: {str(exc).splitlines()[0]}") from None
            # torch's message goes on to suggest disabling the check; that advice is not ours to give.
            found = re.search(r"GLOBAL ([\w.]+)", str(exc))
            what = f" ({found.group(1)})" if found else ""
            raise UserError(f"checkpoint {file} holds Python objects{what} that a Tempering checkpoint never "
                            "contains, so it was refused for safety (loading it could run arbitrary code); "
                            "start from a checkpoint you trust") from None
        except Exception as exc:  # torch raises RuntimeError, EOFError, ...
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"checkpoint {file} is corrupt or truncated: {message}") from None


def save_checkpoint(
    target: str | Path,
    *,
    weights: dict[str, torch.Tensor] | None,
    hf_config: dict,
    meta: dict,
    trainer_state: dict | None = None,
    tokenizer_dir: str | Path | None = None,
    generation_config: dict | None = None,
    previous: Path | None = None,
    on_partial_write: Callable[[], None] | None = None,
    adapter: tuple[dict[str, torch.Tensor], dict] | None = None,
    adapter_in_subdir: bool = False,
    sharded_dir: Path | None = None,
) -> Path:
    """Write a complete checkpoint directory at target atomically, replacing any existing one.

    `weights` must hold no two tensors sharing memory (pass tied weights once).
    `trainer_state` may hold only dicts, lists, tuples, sets, str, bytes, numbers, None,
    tensors, torch.Size/dtype/device. `meta` must carry an integer "step"; keys of META_KEYS
    it lacks are written as null and created_at defaults to now. `previous` names the
    checkpoint an error message calls intact (default: target, when it exists).
    `on_partial_write` runs when the weights are written but nothing else is: the fault
    injection `debug.kill_during_save_at_step` kills the process there. `adapter` is a LoRA
    adapter's (tensors, adapter_config.json), written beside the weights, or in adapter/ when
    `adapter_in_subdir` (never beside model.safetensors, where transformers would apply it on
    load); `weights` may then be None (a periodic LoRA checkpoint holds the adapter only).
    `sharded_dir` is a DCP directory every rank has already written (an FSDP run's periodic
    checkpoint, see `checkpoint/sharded.py`): it is moved in as sharded/, in place of weights.
    """
    if weights is None and adapter is None and sharded_dir is None:
        raise ValueError("a checkpoint needs weights, an adapter or sharded state")
    target = Path(target)
    meta = _complete_meta(meta)
    if trainer_state is not None:
        check_weights_only_loadable(trainer_state)
    tokenizer_files = _tokenizer_files(Path(tokenizer_dir)) if tokenizer_dir else []
    if previous is None and target.is_dir():
        previous = target

    def write(folder: Path) -> None:
        if weights is not None:
            _write_weights(folder / WEIGHTS_FILE, weights)
        if sharded_dir is not None:
            os.replace(sharded_dir, folder / SHARDED_DIR)
        if adapter is not None:
            adapter_folder = folder / ADAPTER_DIR if adapter_in_subdir else folder
            adapter_folder.mkdir(exist_ok=True)
            _write_weights(adapter_folder / ADAPTER_WEIGHTS_FILE, adapter[0])
            _write_json(adapter_folder / ADAPTER_CONFIG_FILE, adapter[1])
        if on_partial_write is not None:
            on_partial_write()
        _write_json(folder / CONFIG_FILE, hf_config)
        if generation_config is not None:
            _write_json(folder / GENERATION_CONFIG_FILE, generation_config)
        if trainer_state is not None:
            _write_trainer_state(folder / TRAINER_STATE_FILE, trainer_state)
        for source in tokenizer_files:
            shutil.copyfile(source, folder / source.name)
            fsync_file(folder / source.name)
        _write_json(folder / META_FILE, meta)

    try:
        return write_dir_atomically(target, write)
    except Exception as exc:
        os_error = find_os_error(exc)
        if os_error is None:
            raise
        raise UserError(_write_failure(target, os_error, previous)) from exc


def load_checkpoint(path: str | Path, select: Select = "best") -> Checkpoint:
    """Resolve path (checkpoint or run dir) and validate the checkpoint's files and headers."""
    folder = resolve_checkpoint(path, select)
    adapter_only = not (folder / WEIGHTS_FILE).exists() and (folder / ADAPTER_WEIGHTS_FILE).is_file()
    sharded = not (folder / WEIGHTS_FILE).exists() and (folder / SHARDED_DIR).is_dir()
    for name in REQUIRED_FILES:
        if not (folder / name).is_file() and not ((adapter_only or sharded) and name == WEIGHTS_FILE):
            raise UserError(f"checkpoint {folder} is incomplete: {name} is missing")
    hf_config = read_json_object(folder / CONFIG_FILE)
    meta = read_meta(folder)
    if sharded:
        if not (folder / SHARDED_DIR / ".metadata").is_file():
            raise UserError(f"checkpoint {folder / SHARDED_DIR} is incomplete: its .metadata is missing")
        return Checkpoint(path=folder, hf_config=hf_config, meta=meta)
    weights_file = folder / (ADAPTER_WEIGHTS_FILE if adapter_only else WEIGHTS_FILE)
    try:
        with safe_open(weights_file, framework="pt"):
            pass  # opening parses the header and checks the file covers every tensor
    except (SafetensorError, OSError) as exc:
        raise UserError(
            f"checkpoint {weights_file} is corrupt or truncated: {exc}"
        ) from exc
    return Checkpoint(path=folder, hf_config=hf_config, meta=meta)


def read_meta(checkpoint_dir: Path) -> dict:
    """Read and check a checkpoint's meta.json (an object with an integer "step")."""
    file = Path(checkpoint_dir) / META_FILE
    if not file.is_file():
        raise UserError(f"checkpoint {checkpoint_dir} is incomplete: {META_FILE} is missing")
    meta = read_json_object(file)
    if type(meta.get("step")) is not int:
        raise UserError(f"checkpoint {file} is corrupt: it has no integer 'step'")
    return meta


def check_weights_only_loadable(obj: object, where: str = "trainer_state") -> None:
    """Raise TypeError naming the first value torch.load(weights_only=True) would reject."""
    if isinstance(obj, torch.Tensor) or type(obj) in _PLAIN_LEAVES:
        return
    if type(obj) in (dict, OrderedDict):
        for key, value in obj.items():
            check_weights_only_loadable(key, f"{where} key {key!r}")
            check_weights_only_loadable(value, f"{where}[{key!r}]")
    elif type(obj) in (list, tuple, set):
        for index, item in enumerate(obj):
            check_weights_only_loadable(item, f"{where}[{index}]")
    else:
        raise TypeError(
            f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}; trainer_state may "
            "hold only dicts, lists, tuples, str, numbers, None and tensors"
        )


def find_os_error(exc: BaseException) -> OSError | None:
    """Find the operating-system error behind a failed write, however the writer wrapped it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError):
            return exc
        # safetensors reports I/O failures only as text ("... (os error 28)"); this parse can
        # go once it raises OSError. torch.save keeps the OSError as __context__.
        match = re.search(r"os error (\d+)", str(exc)) if isinstance(exc, SafetensorError) else None
        if match:
            code = int(match.group(1))
            return OSError(code, os.strerror(code))
        exc = exc.__cause__ or exc.__context__
    return None


def _write_failure(target: Path, error: OSError, previous: Path | None) -> str:
    """Compose the one-line message for a checkpoint that could not be written."""
    reason = error.strerror or str(error)
    kept = f"the previous checkpoint {previous} is intact" if previous else "nothing was changed"
    advice = ""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "; free disk space and re-run the same command to resume"
    return f"could not write checkpoint {target}: {reason}; {kept}{advice}"


def _complete_meta(meta: dict) -> dict:
    """Add the META_KEYS the caller left out, after checking the step."""
    if type(meta.get("step")) is not int:
        raise ValueError(f"meta needs an integer 'step', got {meta.get('step')!r}")
    completed = {**dict.fromkeys(META_KEYS), **meta}
    if completed["created_at"] is None:
        completed["created_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return completed


def _tokenizer_files(tokenizer_dir: Path) -> list[Path]:
    """List the tokenizer files to copy, checking tokenizer.json is there."""
    if not (tokenizer_dir / TOKENIZER_FILES[0]).is_file():
        raise UserError(f"tokenizer directory {tokenizer_dir} has no {TOKENIZER_FILES[0]}")
    return [tokenizer_dir / name for name in TOKENIZER_FILES if (tokenizer_dir / name).is_file()]


def _write_weights(file: Path, weights: dict[str, torch.Tensor]) -> None:
    """Write tensors as safetensors with the metadata transformers expects, then fsync."""
    tensors = {name: tensor.detach().contiguous() for name, tensor in weights.items()}
    save_file(tensors, file, metadata={"format": "pt"})
    fsync_file(file)


def _write_trainer_state(file: Path, state: dict) -> None:
    """torch.save the trainer state and fsync it."""
    with open(file, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _write_json(file: Path, obj: dict) -> None:
    """Write an indented JSON file (paths as strings) and fsync it."""
    text = json.dumps(obj, indent=2, default=_path_to_str) + "\n"
    with open(file, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _path_to_str(value: object) -> str:
    """Let JSON hold paths (source_checkpoint); anything else unknown is a bug."""
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} {value!r} to JSON")


def read_json_object(file: Path) -> dict:
    """Parse a checkpoint's JSON file that must hold an object, naming the file on failure."""
    return json_files.read_json_object(file, invalid="checkpoint {file} is corrupt or truncated: {error}",
                                       not_object="checkpoint {file} is corrupt: expected a JSON object")
