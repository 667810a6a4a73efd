"""The workload every row trains on: token windows, chats and the initial checkpoint (built by the parent).

Cached in the work dir by (vocab, seq_len, seed), so rounds and re-runs reuse it. The
HF rows load the initial checkpoint; `temper pretrain` builds the same weights itself
from the same seed (`check_same_start` verifies that with a zero-learning-rate run).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ANSWER_CHARS = 600  # keeps a chat (question + answer + template) within 256 tokens of the 8192 tokenizer


@dataclass(frozen=True)
class Workload:
    """Paths and facts of the prepared workload."""

    shards: Path
    tokenizer: Path
    windows: Path  # .npy (num_windows, seq_len + 1) int32
    chat_data: Path
    checkpoint: Path
    chat_template: str
    vocab_size: int  # the model's


def token_windows(shards: Path, seq_len: int, out: Path) -> Path:
    """Cut the train split into windows of seq_len + 1 tokens, as `temper pretrain` does; save as .npy."""
    if out.exists():
        return out
    manifest = json.loads((shards / "manifest.json").read_text())
    dtype = np.dtype(manifest["dtype"])
    tokens = np.concatenate([np.fromfile(shards / s["file"], dtype=dtype)
                             for s in manifest["splits"]["train"]["shards"]])
    num_windows = (len(tokens) - 1) // seq_len
    windows = np.lib.stride_tricks.sliding_window_view(tokens, seq_len + 1)[::seq_len][:num_windows]
    np.save(out, windows.astype(np.int32))
    return out


def pydoc_chats(out: Path) -> Path:
    """Write `messages` chats from `pydoc_data.topics`: the question names a topic, the answer is its text."""
    if out.exists():
        return out
    import pydoc_data.topics

    lines = []
    for topic in sorted(pydoc_data.topics.topics):
        for part, answer in enumerate(_answers(pydoc_data.topics.topics[topic]), start=1):
            question = f"What does the Python reference say about {topic.replace('-', ' ')}? (part {part})"
            lines.append(json.dumps({"messages": [{"role": "user", "content": question},
                                                  {"role": "assistant", "content": answer}]}))
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _answers(text: str) -> list[str]:
    """Paragraphs of `text` gathered into answers of at most ANSWER_CHARS characters."""
    answers, current = [], ""
    for paragraph in (p.strip() for p in text.split("\n\n")):
        paragraph = paragraph[:ANSWER_CHARS]
        if not paragraph:
            continue
        if current and len(current) + 2 + len(paragraph) > ANSWER_CHARS:
            answers.append(current)
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
    return answers + ([current] if current else [])


def initial_checkpoint(tokenizer_dir: Path, vocab_size: int | None, seed: int, out: Path) -> tuple[Path, int]:
    """Save the seeded `nano` model as a Tempering checkpoint (HF-loadable); return it and its vocab size."""
    from tempering.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    vocab = vocab_size or tokenizer.vocab_size
    if (out / "model.safetensors").exists():
        return out, vocab
    import torch

    from tempering.checkpoint.io import save_checkpoint
    from tempering.models.family import SpecialTokenIds
    from tempering.models.registry import find_preset

    family, preset = find_preset("nano")
    arch = preset.with_overrides(vocab_size=vocab)
    torch.manual_seed(seed)  # what `temper pretrain` does right before it builds the model
    model = family.build(arch)
    special = SpecialTokenIds(bos_id=tokenizer.bos_id, eos_ids=(tokenizer.eos_id,), pad_id=tokenizer.pad_id)
    save_checkpoint(out, weights=model.export_state_dict(),
                    hf_config=family.to_hf_config(arch, dropout=0.0, special=special),
                    meta={"step": 0, "tokenizer_fingerprint": tokenizer.fingerprint, "preset": "nano",
                          "source_checkpoint": None, "post_training": False, "family": family.name},
                    tokenizer_dir=tokenizer_dir)
    return out, vocab


def check_same_start(workload: Workload, pretrain_args: list[str], run_dir: Path) -> bool:
    """Run `temper pretrain` one step at learning rate 0; True if its weights equal the initial checkpoint's."""
    from safetensors.torch import load_file

    shutil.rmtree(run_dir, ignore_errors=True)  # scratch space of an earlier check, maybe of another config
    subprocess.run([sys.executable, "-m", "tempering", "pretrain", *pretrain_args, "--save-dir", str(run_dir),
                    "--max-steps", "1", "--lr", "0"], check=True, capture_output=True)
    trained = load_file(run_dir / "final" / "model.safetensors")
    initial = load_file(workload.checkpoint / "model.safetensors")
    return trained.keys() == initial.keys() and all(bool((trained[k] == initial[k]).all()) for k in initial)


def prepare_workload(work: Path, prepare_shards, *, vocab_size: int | None, seq_len: int, seed: int,
                     chat_data: Path | None) -> Workload:
    """Build (or reuse) everything the rows need under `work`."""
    shards, tok = prepare_shards(work, 8192, ("prose",))
    checkpoint, vocab = initial_checkpoint(tok, vocab_size, seed, work / f"init-v{vocab_size or 0}-s{seed}")
    from tempering.data.chat.templates import CHATML

    return Workload(shards=shards, tokenizer=tok, windows=token_windows(shards, seq_len, work / f"windows-{seq_len}.npy"),
                    chat_data=chat_data or pydoc_chats(work / "pydoc_chats.jsonl"), checkpoint=checkpoint,
                    chat_template=CHATML.source, vocab_size=vocab)
