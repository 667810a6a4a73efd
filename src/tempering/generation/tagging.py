"""`temper tag`: run a token-classification checkpoint over text or NER rows; print entities or write tagged JSONL.

Text is split into words (runs of letters and digits, joined by inner `-`, `'` or `.`, and
single punctuation marks, each with its character span) before it goes through the same
word-piece alignment as training; JSONL rows with `tokens` are taken as they are. A word's
tag is the prediction at its first piece and its score that tag's softmax probability; an
entity (decoded by seqeval in strict IOB2, as validation scores them) gets the mean score
of its words. Tagged rows get `ner_tags` (the predictions: a tagged file is NER training data
again) and `entities`; tags a row already had are kept as `gold_tags`.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import torch

from tempering.checkpoint.model_loading import LoadedModel, load_model
from tempering.data.ner.alignment import align_sentences
from tempering.data.ner.batches import collate
from tempering.data.ner.records import Sentence
from tempering.errors import UserError
from tempering.tokenizer.encoder_tokens import encoder_tokens
from tempering.tracking.console import console, print_table
from tempering.training.device import pick_device

WORD = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]")


@dataclass(frozen=True)
class Entity:
    """One tagged entity: its text, type, span (characters for text, word indices for token rows), score."""

    text: str
    type: str
    start: int
    end: int  # exclusive
    score: float


def split_words(text: str) -> list[tuple[str, int, int]]:
    """The words of a text with their character spans."""
    return [(match.group(), match.start(), match.end()) for match in WORD.finditer(text)]


def predict_tags(loaded: LoadedModel, sentences: list[list[str]], *, batch_size: int = 32) -> list[tuple[list[str],
                                                                                                           list[float]]]:
    """(tag, probability) of every word of every sentence; words past the model's context are tagged O, score 0."""
    labels = tuple(loaded.arch.labels)
    tokens = encoder_tokens(loaded.tokenizer)
    rows = [Sentence(tuple(words), ("O",) * len(words), f"row {i + 1}") for i, words in enumerate(sentences)]
    aligned, refused = align_sentences(rows, {"O": 0} | {label: i for i, label in enumerate(labels)},
                                       loaded.tokenizer, tokens, max_len=loaded.family.context_length(loaded.arch))
    if refused:
        raise UserError(f"{refused[0][0]}: {refused[0][1]}")
    results = []
    device = next(loaded.model.parameters()).device
    for start in range(0, len(aligned), batch_size):
        chunk = aligned[start:start + batch_size]
        batch = collate(chunk, tokens.pad_id)
        mask = batch["attention_mask"]
        with torch.no_grad():
            logits = loaded.model(torch.from_numpy(batch["input_ids"]).to(device),
                                  None if mask is None else torch.from_numpy(mask).to(device))
        probabilities, predicted = logits.float().softmax(-1).max(-1)
        for row, sentence in enumerate(chunk):
            keep = torch.from_numpy(batch["word_starts"][row]).to(device)
            tags = [labels[i] for i in predicted[row][keep].tolist()]
            scores = probabilities[row][keep].tolist()
            missing = sentence.num_words - len(tags)  # cut off by the context length
            results.append((tags + ["O"] * missing, scores + [0.0] * missing))
    return results


def find_entities(words: list[str], tags: list[str], scores: list[float],
                  spans: list[tuple[int, int]] | None = None, text: str | None = None) -> list[Entity]:
    """Entities of a tagged sentence (strict IOB2); spans in characters when `spans` and `text` are given."""
    from seqeval.scheme import IOB2, Entities

    found = []
    for entity in sorted(Entities([tags], IOB2).entities[0], key=lambda e: e.start):
        score = sum(scores[entity.start:entity.end]) / (entity.end - entity.start)
        if spans is not None and text is not None:
            start, end = spans[entity.start][0], spans[entity.end - 1][1]
            found.append(Entity(text[start:end], entity.tag, start, end, round(score, 4)))
        else:
            found.append(Entity(" ".join(words[entity.start:entity.end]), entity.tag, entity.start, entity.end,
                                round(score, 4)))
    return found


def run_tag(checkpoint: str, *, text: str | None, input_file: str | None, output: str | None, batch_size: int,
            device: str, out: TextIO = sys.stdout) -> None:
    """Print the entities of `text`, or write `input_file`'s rows with `ner_tags` and `entities` as JSONL."""
    if (text is None) == (input_file is None):
        raise UserError("give exactly one of --text TEXT or --input FILE.jsonl")
    loaded = load_model(checkpoint, device=pick_device(device))
    if getattr(loaded.arch, "head", None) != "token_classification":
        raise UserError(f"{loaded.checkpoint.path} is not a token-classification checkpoint (train one with "
                        "--task ner)")
    if text is not None:
        words = split_words(text)
        if not words:
            raise UserError("--text holds no words")
        [(tags, scores)] = predict_tags(loaded, [[w for w, _, _ in words]], batch_size=batch_size)
        entities = find_entities([w for w, _, _ in words], tags, scores, [(s, e) for _, s, e in words], text)
        print_table(f"{len(entities)} entities", ["text", "type", "score", "characters"],
                    [[e.text, e.type, f"{e.score:.3f}", f"{e.start}–{e.end}"] for e in entities])
        return
    rows = _read_rows(Path(input_file))
    with (open(output, "w", encoding="utf-8") if output else _Unclosed(out)) as sink:
        for start in range(0, len(rows), 256):
            _write_tagged(loaded, rows[start:start + 256], sink, batch_size)
    if output:
        console.print(f"tagged {len(rows)} rows into {output}")


def _write_tagged(loaded: LoadedModel, rows: list[dict], sink: TextIO, batch_size: int) -> None:
    words = [[w for w, _, _ in split_words(row["text"])] if "tokens" not in row else row["tokens"] for row in rows]
    for row, row_words, (tags, scores) in zip(rows, words, predict_tags(loaded, words, batch_size=batch_size),
                                              strict=True):
        if "tokens" in row:
            entities = find_entities(row_words, tags, scores)
        else:
            spans = [(s, e) for _, s, e in split_words(row["text"])]
            entities = find_entities(row_words, tags, scores, spans, row["text"])
            row = {**row, "tokens": row_words}
        if "ner_tags" in row:  # the row's own tags are kept, beside the predicted ones
            row = {**{k: v for k, v in row.items() if k != "ner_tags"}, "gold_tags": row["ner_tags"]}
        sink.write(json.dumps({**row, "ner_tags": tags, "entities": [asdict(e) for e in entities]},
                              ensure_ascii=False) + "\n")


def _read_rows(file: Path) -> list[dict]:
    """Rows with `tokens` (a list of words) or `text`; UserError names a bad line."""
    if not file.is_file():
        raise UserError(f"--input {file}: no such file")
    rows = []
    with open(file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                raise UserError(f"{file}:{number}: invalid JSON ({error})") from None
            tokens = row.get("tokens") if isinstance(row, dict) else None
            if not (isinstance(tokens, list) and tokens and all(isinstance(t, str) and t.strip() for t in tokens)) \
                    and not (isinstance(row, dict) and isinstance(row.get("text"), str) and split_words(row["text"])):
                raise UserError(f"{file}:{number}: a row needs 'tokens' (non-empty words) or 'text'")
            rows.append(row)
    if not rows:
        raise UserError(f"--input {file}: holds no rows")
    return rows


class _Unclosed:
    """A context manager around a stream it must not close (stdout)."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def __enter__(self) -> TextIO:
        return self.stream

    def __exit__(self, *exc) -> None:
        self.stream.flush()
