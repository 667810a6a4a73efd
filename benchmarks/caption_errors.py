"""Where a scene captioner goes wrong: per-object accuracy on held-out against seen colour-shape pairs.

Exact match over a whole scene hides which objects fail. This greedy-captions a scenes caption
JSON with a checkpoint, parses every "a <size> <colour> <shape>" phrase of reference and
caption, pairs them in order (scenes whose caption has a different number of objects count as
wrong for each of their objects) and reports:
  - exact match by number of objects,
  - object accuracy (all three attributes right) for objects whose (colour, shape) pair was held
    out of training, and for the others,
  - the most frequent attribute substitutions.

    python benchmarks/caption_errors.py RUN/best images/scenes.val400.json
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

import torch

from tempering.checkpoint.model_loading import load_model
from tempering.data.images.records import read_caption_file
from tempering.data.images.sample import COLOURS, HELD_OUT, OTHER, RADII, SHAPES
from tempering.evaluation.captions import caption_eval_set
from tempering.training.captioning import CaptionScores, greedy_captions

OBJECT = re.compile(rf"\ba ({'|'.join(RADII)}) ({'|'.join([*COLOURS, OTHER])}) ({'|'.join(SHAPES)})\b")


def greedy(checkpoint: Path, caption_json: Path, batch_size: int = 100) -> list[tuple[str, str]]:
    """(reference, greedy caption) for every image of a caption JSON, tokenized as `temper eval` does."""
    loaded = load_model(str(checkpoint), device="cpu")
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    scores = CaptionScores(tokenizer.decode)
    for batch in caption_eval_set(loaded, read_caption_file(caption_json)).eval_batches(batch_size):
        tensors = {key: torch.as_tensor(value) for key, value in batch.items()}
        scores.update(tensors, greedy_captions(model, tensors, tokenizer.eos_id))
    return list(zip(scores.references, scores.hypotheses, strict=True))


def error_report(pairs: list[tuple[str, str]]) -> dict:
    """Exact match by object count, held-out vs seen object accuracy, top substitutions."""
    by_count: dict[int, list[int]] = {}
    objects = {"held_out": [0, 0], "seen": [0, 0]}
    substitutions: Counter = Counter()
    for reference, caption in pairs:
        wanted, got = OBJECT.findall(reference), OBJECT.findall(caption)
        tally = by_count.setdefault(len(wanted), [0, 0])
        tally[0] += reference == caption
        tally[1] += 1
        for index, target in enumerate(wanted):
            group = objects["held_out" if (target[1], target[2]) in HELD_OUT else "seen"]
            guess = got[index] if len(got) == len(wanted) else None
            group[0] += guess == target
            group[1] += 1
            substitutions.update(f"{want}->{have}" for want, have in zip(target, guess or target, strict=True)
                                 if want != have)
        if len(got) != len(wanted):
            substitutions["object count"] += 1
    return {"exact_match": round(sum(r == c for r, c in pairs) / max(len(pairs), 1), 4),
            "exact_match_by_objects": {n: f"{right}/{total}" for n, (right, total) in sorted(by_count.items())},
            "object_accuracy": {name: round(right / total, 4) if total else None
                                for name, (right, total) in objects.items()},
            "objects": {name: total for name, (_, total) in objects.items()},
            "top_substitutions": substitutions.most_common(8)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="A vision checkpoint dir (e.g. RUN/best).")
    parser.add_argument("captions", type=Path, help="A scenes caption JSON (e.g. images/scenes.val400.json).")
    parser.add_argument("--examples", type=int, default=5, help="Reference/caption pairs to print.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pairs = greedy(args.checkpoint, args.captions)
    print(json.dumps(error_report(pairs)))
    for reference, caption in pairs[:args.examples]:
        print(f"  reference: {reference}\n  caption:   {caption}")


if __name__ == "__main__":
    main()
