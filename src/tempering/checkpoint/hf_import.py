"""`temper import`: a local Hugging Face model directory → a Tempering checkpoint every stage accepts.

The directory's `config.json` picks the model family (by `model_type`) and the family reads
the architecture, refusing what it cannot reproduce with a message naming the key. Weights
come from `model.safetensors` or from the shards a `model.safetensors.index.json` lists;
they are stored in fp32 (the precision training keeps its master weights in). The tokenizer
files (and chat template) are copied and fingerprinted. The checkpoint has no trainer
state: stages start it with a fresh optimizer and schedule.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from tempering import json_files
from tempering.checkpoint.io import save_checkpoint
from tempering.checkpoint.paths import CONFIG_FILE, GENERATION_CONFIG_FILE, TOKENIZER_FILES
from tempering.errors import UserError
from tempering.models.family import ModelFamily, SpecialTokenIds
from tempering.models.registry import family_for_model_type
from tempering.tokenizer import TokenizerBundle, load_tokenizer
from tempering.tracking.console import console

SINGLE_WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
# Buffers some exporters save although the model recomputes them.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def import_hf_model(hf_dir: str | Path, output: str | Path) -> dict:
    """Convert `hf_dir` into a checkpoint at `output` (which must not hold anything); return a summary."""
    hf_dir, output = Path(hf_dir), Path(output)
    if not hf_dir.is_dir():
        raise UserError(f"--from {hf_dir}: not a directory (give a local Hugging Face model directory)")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UserError(f"--output {output} already exists and is not empty; choose a new directory")
    config_file = hf_dir / CONFIG_FILE
    if not config_file.is_file():
        raise UserError(f"{hf_dir} has no {CONFIG_FILE}; it is not a Hugging Face model directory")
    hf_config = json_files.read_json_object(config_file)
    family = family_for_model_type(hf_config.get("model_type"), where=str(config_file))
    arch = family.from_hf_config(hf_config, where=str(config_file))
    if not (hf_dir / TOKENIZER_FILES[0]).is_file():
        raise UserError(f"{hf_dir} has no {TOKENIZER_FILES[0]}; save the model's fast tokenizer into it with "
                        "AutoTokenizer.from_pretrained(...).save_pretrained(DIR)")
    tokenizer = load_tokenizer(hf_dir)
    vocab_size = family.vocab_size(arch)
    if vocab_size is not None and tokenizer.vocab_size > vocab_size:
        raise UserError(f"{hf_dir}: the tokenizer has {tokenizer.vocab_size} tokens but the model embeds only "
                        f"{vocab_size} (vocab_size in {CONFIG_FILE})")
    weights = _checked_weights(family.import_weights(hf_config, _read_weights(hf_dir)), family, arch, hf_dir)
    special = _special_ids(hf_config, hf_dir, tokenizer)
    meta = {"step": 0, "family": family.name, "model_type": family.model_type(arch),
            "tokenizer_fingerprint": tokenizer.fingerprint, "imported_from": str(hf_dir.resolve()),
            "source_checkpoint": None, "post_training": False, "preset": None}
    save_checkpoint(output, weights=weights, hf_config=family.to_hf_config(arch, dropout=0.0, special=special),
                    generation_config=family.generation_config(special), meta=meta, tokenizer_dir=hf_dir)
    summary = {"output": str(output), "family": family.name, "model_type": family.model_type(arch),
               "parameters": family.count_parameters(arch), "tensors": len(weights),
               "tokenizer_fingerprint": tokenizer.fingerprint, "eos_token_ids": list(special.eos_ids)}
    console.print(f"imported {hf_dir} ({summary['model_type']}, {summary['parameters'] / 1e6:.2f}M parameters, "
                  f"{summary['tensors']} tensors) into {output}")
    return summary


def _read_weights(hf_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of model.safetensors, or of the shards model.safetensors.index.json names."""
    index_file = hf_dir / WEIGHTS_INDEX
    if index_file.is_file():
        weight_map = json_files.read_json_object(index_file).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise UserError(f"{index_file} has no weight_map; re-save the model with save_pretrained")
        files = sorted(set(weight_map.values()))
    elif (hf_dir / SINGLE_WEIGHTS).is_file():
        files = [SINGLE_WEIGHTS]
    else:
        found = sorted(p.name for p in hf_dir.glob("*.bin")) or ["no weight files"]
        raise UserError(f"{hf_dir} has no {SINGLE_WEIGHTS} or {WEIGHTS_INDEX} (found {', '.join(found)}); "
                        "re-save the model with save_pretrained(..., safe_serialization=True)")
    weights: dict[str, torch.Tensor] = {}
    for name in files:
        file = hf_dir / name
        if not file.is_file():
            raise UserError(f"{index_file} lists {name}, which is missing from {hf_dir}")
        try:
            weights.update(load_file(file))
        except (SafetensorError, OSError) as exc:
            raise UserError(f"{file} is corrupt or truncated: {exc}") from None
    return {name: tensor.float() if tensor.is_floating_point() else tensor for name, tensor in weights.items()
            if not name.endswith(IGNORED_SUFFIXES)}


def _checked_weights(weights: dict[str, torch.Tensor], family: ModelFamily, arch, hf_dir: Path) -> dict:
    """The tensors the family expects, by name and shape (a tied head the exporter wrote is dropped)."""
    expected, optional = family.expected_tensors(arch), family.optional_tensors(arch)
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected) - set(optional))
    for names, problem in ((missing, "lacks tensor"), (unexpected, "has tensor")):
        if names:
            more = f" and {len(names) - 1} more" if len(names) > 1 else ""
            raise UserError(f"{hf_dir} {problem} {names[0]}{more}, which the {family.model_type(arch)} architecture "
                            f"in its {CONFIG_FILE} does not explain")
    for name, shape in expected.items():
        if tuple(weights[name].shape) != shape:
            raise UserError(f"{hf_dir}: {name} has shape {list(weights[name].shape)}, but its {CONFIG_FILE} "
                            f"implies {list(shape)}")
    return {name: weights[name].contiguous() for name in expected}


def _special_ids(hf_config: dict, hf_dir: Path, tokenizer: TokenizerBundle) -> SpecialTokenIds:
    """bos / eos / pad ids: the model's config and generation config first, the tokenizer's otherwise."""
    generation_file = hf_dir / GENERATION_CONFIG_FILE
    generation = json_files.read_json_object(generation_file) if generation_file.is_file() else {}
    eos_ids: list[int] = [tokenizer.eos_id]
    for source in (hf_config, generation):
        value = source.get("eos_token_id")
        eos_ids += [i for i in (value if isinstance(value, list) else [value]) if isinstance(i, int)]
    bos = hf_config.get("bos_token_id", tokenizer.bos_id)
    pad = hf_config.get("pad_token_id", tokenizer.pad_id)
    return SpecialTokenIds(bos_id=bos if isinstance(bos, int) else tokenizer.bos_id,
                           eos_ids=tuple(dict.fromkeys(eos_ids)),
                           pad_id=pad if isinstance(pad, int) else tokenizer.pad_id)
