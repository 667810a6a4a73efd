"""Sequential expert runs: train a mixture of experts one expert (and one domain) at a time, then merge.

A run with `training.active_expert` I and `checkpoint.expert_checkpoint_dir` DIR starts from
what DIR holds — the newest shared weights (`shared.safetensors`: embeddings, attention,
norms, routers, head, and a shared expert with its gate where the model has one) and every
expert saved there (`expert_<j>.safetensors`) — and, when it ends, writes its expert I and
its shared weights back, each file atomically (temp file, fsync, rename). `experts.json`
records the architecture, tokenizer and which run wrote each file. `merge_experts` assembles
DIR into one checkpoint that every stage accepts; a short router-only post-training
(`--train-only router`) then teaches the router to pick.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tempering import json_files
from tempering.checkpoint.atomic import fsync_dir, fsync_file
from tempering.checkpoint.io import load_checkpoint, save_checkpoint
from tempering.checkpoint.paths import TOKENIZER_FILES
from tempering.errors import UserError
from tempering.models.family import ModelFamily, ParameterLayout
from tempering.models.registry import get_family
from tempering.tracking.console import console

SHARED_FILE = "shared.safetensors"
MANIFEST_FILE = "experts.json"
TOKENIZER_SUBDIR = "tokenizer"


def expert_file(index: int) -> str:
    """The file holding expert `index`'s weights (its three projections in every layer)."""
    return f"expert_{index}.safetensors"


def load_expert_dir(directory: Path, family: ModelFamily, arch, tokenizer_fingerprint: str) -> dict[str, torch.Tensor]:
    """The tensors DIR holds (shared weights and saved experts), checked against this run; {} for a new DIR."""
    manifest = _read_manifest(directory)
    if manifest is None:
        console.print(f"expert checkpoint dir {directory}: empty, starting from fresh weights")
        return {}
    if manifest["tokenizer_fingerprint"] != tokenizer_fingerprint:
        raise UserError(f"{directory / MANIFEST_FILE}: its experts were trained with tokenizer "
                        f"{manifest['tokenizer_fingerprint']}, this run uses {tokenizer_fingerprint}")
    expected = family.expected_tensors(arch)
    weights: dict[str, torch.Tensor] = {}
    loaded = []
    for name in [SHARED_FILE, *(expert_file(int(j)) for j in sorted(manifest["experts"], key=int))]:
        if (directory / name).is_file():
            weights.update(_read_tensors(directory / name))
            loaded.append(name)
    for name, tensor in weights.items():
        if expected.get(name) != tuple(tensor.shape):
            raise UserError(f"{directory}: {name} ({list(tensor.shape)}) does not fit this run's architecture "
                            f"({list(expected[name]) if name in expected else 'no such tensor'}); use the preset "
                            "and model.* overrides the first expert run used")
    console.print(f"expert checkpoint dir {directory}: loaded {', '.join(loaded)}")
    return weights


def save_expert_run(directory: Path, final_checkpoint: Path, family: ModelFamily, active: int,
                    tokenizer_dir: Path | None) -> None:
    """Write the run's expert `active` and (unless a newer run wrote them) its shared weights into DIR."""
    checkpoint = load_checkpoint(final_checkpoint)
    weights = checkpoint.load_weights()
    expert, shared = split_expert_weights(weights, family.layout, active)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(directory) or {"family": family.name, "config": checkpoint.hf_config,
                                             "generation_config": checkpoint.generation_config,
                                             "tokenizer_fingerprint": checkpoint.meta.get("tokenizer_fingerprint"),
                                             "experts": {}, "shared": None}
    record = {"run": str(final_checkpoint.parent.resolve()), "step": checkpoint.step,
              "trained_at": checkpoint.meta.get("created_at")}
    _write_tensors(directory / expert_file(active), expert)
    manifest["experts"][str(active)] = record
    written = [expert_file(active)]
    newer = manifest["shared"] and manifest["shared"]["run"] != record["run"] and \
        (manifest["shared"]["trained_at"] or "") > (record["trained_at"] or "")
    if newer:
        console.print(f"{directory / SHARED_FILE} comes from a newer run ({manifest['shared']['run']}): kept")
    else:
        _write_tensors(directory / SHARED_FILE, shared)
        manifest["shared"] = {**record, "expert": active}
        written.append(SHARED_FILE)
    if tokenizer_dir is not None and not (directory / TOKENIZER_SUBDIR / TOKENIZER_FILES[0]).is_file():
        (directory / TOKENIZER_SUBDIR).mkdir(exist_ok=True)
        for name in TOKENIZER_FILES:
            if (Path(tokenizer_dir) / name).is_file():
                _write_bytes(directory / TOKENIZER_SUBDIR / name, (Path(tokenizer_dir) / name).read_bytes())
    _write_bytes(directory / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode())
    console.print(f"expert checkpoint dir {directory}: wrote {', '.join(written)} (step {checkpoint.step})")


def split_expert_weights(weights: dict[str, torch.Tensor], layout: ParameterLayout,
                         active: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(expert `active`'s tensors, the shared tensors); other experts' tensors are in neither."""
    expert = {name: t for name, t in weights.items() if layout.expert_index(name) == active}
    shared = {name: t for name, t in weights.items() if layout.expert_index(name) is None}
    return expert, shared


def merge_experts(directory: Path, output: Path) -> dict:
    """Assemble DIR's shared weights and every expert into one checkpoint at `output`; return a summary."""
    manifest = _read_manifest(directory)
    if manifest is None:
        raise UserError(f"--expert-checkpoint-dir {directory} holds no {MANIFEST_FILE}: run "
                        "`temper pretrain --active-expert I --expert-checkpoint-dir DIR` first")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UserError(f"--output {output} already exists and is not empty; choose a new directory")
    num_experts = get_family(manifest["family"]).from_hf_config(manifest["config"]).n_experts
    missing = [j for j in range(num_experts) if not (directory / expert_file(j)).is_file()]
    if missing:
        raise UserError(f"{directory} lacks {', '.join(expert_file(j) for j in missing)}; train "
                        f"{'them' if len(missing) > 1 else 'it'} with --active-expert {missing[0]} first")
    weights = _read_tensors(directory / SHARED_FILE)
    for j in range(num_experts):
        weights.update(_read_tensors(directory / expert_file(j)))
    meta = {"step": 0, "family": manifest["family"], "model_type": manifest["config"].get("model_type"),
            "tokenizer_fingerprint": manifest["tokenizer_fingerprint"], "merged_from": str(directory.resolve()),
            "experts": manifest["experts"], "source_checkpoint": None, "post_training": False}
    tokenizer_dir = directory / TOKENIZER_SUBDIR
    save_checkpoint(output, weights=weights, hf_config=manifest["config"], meta=meta,
                    generation_config=manifest.get("generation_config") or None,
                    tokenizer_dir=tokenizer_dir if (tokenizer_dir / TOKENIZER_FILES[0]).is_file() else None)
    checkpoint = load_checkpoint(output)  # validates what was written against its config.json
    expected = checkpoint.family.expected_tensors(checkpoint.architecture())
    if set(expected) != set(weights):
        raise UserError(f"{directory}: the merged tensors do not form the model its {MANIFEST_FILE} describes")
    console.print(f"merged {num_experts} experts and the shared weights of {directory} into {output}")
    return {"output": str(output), "experts": num_experts, "tensors": len(weights)}


def _read_manifest(directory: Path) -> dict | None:
    file = directory / MANIFEST_FILE
    if not file.is_file():
        if directory.exists() and not directory.is_dir():
            raise UserError(f"--expert-checkpoint-dir {directory} is a file; give a directory")
        return None
    return json_files.read_json_object(file)


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(file)
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{file} is corrupt or truncated: {exc}") from None


def _write_tensors(file: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write safetensors atomically: a temp sibling, fsync, rename over the old file."""
    temporary = file.with_name(f".tmp-{file.name}-{os.getpid()}")
    save_file({name: t.contiguous() for name, t in tensors.items()}, temporary,
              metadata={"format": "pt", "written_at": datetime.now(timezone.utc).isoformat()})
    fsync_file(temporary)
    os.replace(temporary, file)
    fsync_dir(file.parent)


def _write_bytes(file: Path, data: bytes) -> None:
    """Write a small file atomically."""
    temporary = file.with_name(f".tmp-{file.name}-{os.getpid()}")
    temporary.write_bytes(data)
    fsync_file(temporary)
    os.replace(temporary, file)
    fsync_dir(file.parent)
