"""Perplexity of whole documents under a checkpoint, for `temper prep --ppl-model` (the scoring half).

Lives with evaluation, not in `data`, because it builds a model (`data` never imports `models`).
Any family whose model gives `hidden_states(ids)` and an `lm_head` scores text. Each document
is encoded with the checkpoint's own tokenizer, cut to its first `max_tokens` tokens (at most the
model's context length), and
predicted after an EOS (as in training, where documents follow one another after EOS). Batches
are sorted by length to pad little; no gradients; bf16 autocast where the CPU or GPU computes
bf16 natively. Logits are formed a few thousand rows at a time, never for a whole batch.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from tempering.checkpoint.io import WEIGHTS_FILE, load_checkpoint
from tempering.checkpoint.model_loading import LoadedModel, load_model
from tempering.training.device import NATIVE_BF16_CPU_FLAGS, cpu_flags, pick_device

LOGIT_ROWS = 4096


class DocumentPerplexity:
    """Callable: texts → perplexity of each under the checkpoint at `path`."""

    def __init__(self, path: str, *, max_tokens: int, batch_size: int, device: str = "auto"):
        self.path, self.max_tokens, self.batch_size, self.device_name = path, max_tokens, batch_size, device
        self.checkpoint = load_checkpoint(path, "best")  # a bad path fails here, before prep reads anything
        self._loaded: LoadedModel | None = None

    @functools.cached_property
    def digest(self) -> str:
        """SHA-256 of the checkpoint's weights file: which model scored, for the no-op check."""
        with open(self.checkpoint.path / WEIGHTS_FILE, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()

    def _model(self) -> LoadedModel:
        """The model, loaded on first use (a prep that is up to date never loads it)."""
        if self._loaded is None:
            self._loaded = load_model(self.checkpoint.path, device=pick_device(self.device_name))
            self.device = next(self._loaded.model.parameters()).device
            self.bf16 = _native_bf16(self.device)
            context = self._loaded.family.context_length(self._loaded.arch)
            self.max_tokens = min(self.max_tokens, context) if context else self.max_tokens
            tokenizer = self._loaded.tokenizer.tokenizer
            tokenizer.encode_special_tokens = True  # a document quoting "<|eos|>" is text
            tokenizer.no_padding()
            tokenizer.no_truncation()
        return self._loaded

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Perplexity of each text (exp of the mean next-token loss over its first max_tokens tokens)."""
        # Cut in characters first, so one enormous document never reaches the tokenizer whole.
        pieces = [text[:self.max_tokens * 32] for text in texts]
        tokenizer = self._model().tokenizer.tokenizer
        ids = [encoding.ids[:self.max_tokens] for encoding in tokenizer.encode_batch_fast(pieces, add_special_tokens=False)]
        order = sorted(range(len(ids)), key=lambda index: len(ids[index]))
        scores = np.full(len(ids), np.nan)
        for start in range(0, len(order), self.batch_size):
            chosen = order[start:start + self.batch_size]
            scores[chosen] = self._score([ids[index] for index in chosen])
        return scores

    @torch.no_grad()
    def _score(self, batch: list[list[int]]) -> np.ndarray:
        loaded = self._model()
        eos = loaded.tokenizer.eos_id
        width = max(1, max(map(len, batch)))
        inputs = torch.full((len(batch), width), eos, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for row, ids in enumerate(batch):
            inputs[row, 1:len(ids)] = torch.tensor(ids[:-1], dtype=torch.long)
            labels[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        model = loaded.model
        autocast = torch.autocast(self.device.type, torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with autocast:
            hidden = model.hidden_states(inputs.to(self.device))  # (B, T, D)
        hidden = hidden.flatten(0, 1).float()  # (B*T, D)
        flat_labels = labels.flatten().to(self.device)
        losses = torch.zeros(len(flat_labels), device=self.device)
        weight = model.lm_head.weight.float()
        for start in range(0, len(flat_labels), LOGIT_ROWS):
            rows = slice(start, start + LOGIT_ROWS)
            losses[rows] = F.cross_entropy(hidden[rows] @ weight.T, flat_labels[rows], ignore_index=-100,
                                           reduction="none")
        counts = (labels != -100).sum(dim=1).clamp(min=1)
        mean_loss = losses.view(len(batch), width).sum(dim=1).cpu() / counts
        return torch.exp(mean_loss).double().numpy()


def _native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(NATIVE_BF16_CPU_FLAGS & cpu_flags())
