"""Entity-level scores (seqeval, strict IOB2) on hand-built cases, and through the validation hook."""

import random

import pytest
import torch

from tempering.training.token_classification import EntityScores, TokenClassification, entity_scores

GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"], ["O", "O"]]
PREDICTED = [["B-PER", "I-PER", "O", "B-ORG"],  # PER right; LOC predicted as ORG
             ["B-ORG", "O", "I-PER"],  # ORG right; strict IOB2: a lone I-PER is no entity
             ["B-LOC", "O"]]  # a spurious LOC


def test_hand_built_case_equals_the_counted_values():
    # gold entities: PER, LOC, ORG, PER = 4; predicted: PER, ORG(wrong), ORG, LOC(spurious) = 4; correct: 2.
    scores = entity_scores(GOLD, PREDICTED)
    assert scores["precision"] == pytest.approx(2 / 4)
    assert scores["recall"] == pytest.approx(2 / 4)
    assert scores["f1"] == pytest.approx(0.5)
    assert scores["f1/PER"] == pytest.approx(2 * (1 * 0.5) / 1.5)  # P 1/1, R 1/2
    assert scores["support/PER"] == 2 and scores["f1/ORG"] == pytest.approx(2 / 3)  # P 1/2, R 1/1
    assert scores["f1/LOC"] == 0.0 and scores["precision/LOC"] == 0.0


def test_scores_equal_seqevals_classification_report():
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    rng = random.Random(0)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-ORG", "I-ORG", "I-LOC", "B-LOC"]
    for _ in range(20):
        lengths = [rng.randint(1, 12) for _ in range(rng.randint(1, 8))]
        gold = [[rng.choice(tags) for _ in range(n)] for n in lengths]
        predicted = [[t if rng.random() < 0.7 else rng.choice(tags) for t in row] for row in gold]
        report = classification_report(gold, predicted, mode="strict", scheme=IOB2, output_dict=True,
                                       zero_division=0)
        ours = entity_scores(gold, predicted)
        assert ours["f1"] == pytest.approx(report["micro avg"]["f1-score"])
        assert ours["precision"] == pytest.approx(report["micro avg"]["precision"])
        for kind, values in report.items():
            if not kind.endswith(" avg"):
                assert ours[f"f1/{kind}"] == pytest.approx(values["f1-score"])
                assert ours[f"support/{kind}"] == values["support"]


def test_nothing_to_find_and_nothing_found_scores_zero():
    assert entity_scores([["O", "O"]], [["O", "O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_the_split_metric_reads_word_level_tags_at_first_pieces():
    labels = ("O", "B-PER", "I-PER")
    scores = TokenClassification(labels).split_metric()
    assert isinstance(scores, EntityScores)
    # Row: [start] B-PER(2 pieces) I-PER O [end]; -100 and later pieces are not words.
    batch = {"labels": torch.tensor([[-100, 1, -100, 2, 0, -100]]),
             "word_starts": torch.tensor([[False, True, False, True, True, False]])}
    predicted = torch.tensor([[0, 1, 0, 2, 1, 0]])  # the later piece's and the frame's predictions are ignored
    scores.update(batch, predicted)
    assert scores.gold == [["B-PER", "I-PER", "O"]] and scores.predicted == [["B-PER", "I-PER", "B-PER"]]
    assert scores.compute()["precision"] == pytest.approx(0.5)
