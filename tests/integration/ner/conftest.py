"""NER fixtures: two small labelled "domains" made from a fixed grammar, and an MLM-pretrained tiny encoder.

The sentences are synthetic (names, places, organisations, years, products in a few sentence
shapes) so the tests need no corpus download; the domain shift and the extra PRODUCT label of
the second domain are what continued training and label maps need.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.conftest import run_temper

PEOPLE = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Zoë Müller", "José García", "Chen Wei", "Guido van Rossum"]
PLACES = ["Paris", "New York", "São Paulo", "Tokyo", "Berlin", "Cape Town"]
ORGS = ["Python Software Foundation", "Linux Foundation", "Mozilla", "Acme Corp", "Red Hat"]
PRODUCTS = ["Ubuntu", "Firefox OS", "Debian", "Red Hat Enterprise Linux", "Android"]
VERBS = ["visited", "joined", "left", "praised", "moved to", "wrote about"]


def entity(text: str, kind: str) -> tuple[list[str], list[str]]:
    words = text.split()
    return words, [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)


def sentence(rng: random.Random, domain: str) -> dict:
    words, tags = entity(rng.choice(PEOPLE), "PER")
    verb = rng.choice(VERBS).split()
    words, tags = words + verb, tags + ["O"] * len(verb)
    if domain == "kernel" and rng.random() < 0.6:
        more = entity(rng.choice(PRODUCTS), "PRODUCT")
    else:
        more = entity(rng.choice(PLACES), "GPE") if rng.random() < 0.5 else entity(rng.choice(ORGS), "ORG")
    words, tags = words + more[0], tags + more[1]
    if rng.random() < 0.4:
        words, tags = words + ["in", str(rng.randint(1990, 2024))], tags + ["O", "B-DATE"]
    return {"tokens": words + ["."], "ner_tags": tags + ["O"]}


def write_domain(folder: Path, domain: str, num_train: int, num_val: int, seed: int) -> dict[str, Path]:
    """train.jsonl and val.jsonl of a domain; returns their paths."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, count in (("train", num_train), ("val", num_val)):
        paths[split] = folder / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(sentence(rng, domain), ensure_ascii=False) + "\n"
                                        for _ in range(count)), encoding="utf-8")
    return paths


@pytest.fixture(scope="session")
def ner_data(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """{"docs": {train, val}, "kernel": {train, val}}: the second domain adds PRODUCT."""
    root = tmp_path_factory.mktemp("ner")
    return {"docs": write_domain(root / "docs", "docs", 240, 40, 1),
            "kernel": write_domain(root / "kernel", "kernel", 160, 40, 2)}


NER_RUN = ["--seq-len", "48", "--batch-size", "8", "--lr", "3e-3", "--warmup-steps", "2", "training.log_steps=1"]


@pytest.fixture(scope="session")
def mlm_backbone(workspace, tmp_path_factory) -> Path:
    """encoder_tiny pretrained with masked LM for a few steps on the workspace's prose shards."""
    run = tmp_path_factory.mktemp("mlm") / "run"
    run_temper("pretrain", "--preset", "encoder_tiny", "--objective", "mlm", "--data", workspace / "shards",
               "--tokenizer", workspace / "tok", "--save-dir", run, "--seq-len", "32", "--batch-size", "8",
               "--max-steps", "6", "--lr", "1e-3", "training.eval_max_batches=2", check=True)
    return run


@pytest.fixture(scope="session")
def ner_run(mlm_backbone, ner_data, tmp_path_factory) -> Path:
    """A NER model fine-tuned on the docs domain from the MLM backbone."""
    run = tmp_path_factory.mktemp("ner-run") / "run"
    run_temper("post-train", "--task", "ner", "--checkpoint", mlm_backbone, "--new-dataset",
               ner_data["docs"]["train"], "--val-data", ner_data["docs"]["val"], "--save-dir", run,
               "--max-steps", "20", "--eval-steps", "10", *NER_RUN, check=True)
    return run
