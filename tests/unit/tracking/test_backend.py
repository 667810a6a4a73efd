"""Records as tracker scalars, and the resume rule: a tracker keeps what it holds, gets what it lacks."""

from __future__ import annotations

import math

from tempering.tracking.backend import Backend, record_scalars


class Recording(Backend):
    """A backend that remembers what it was sent."""

    name = "recording"

    def __init__(self):
        super().__init__()
        self.sent: list[tuple[int, dict]] = []

    def log(self, step, scalars):
        self.sent.append((step, scalars))


def test_a_record_becomes_split_slash_field_scalars():
    step, scalars = record_scalars({"step": 7, "epoch": 0.5, "split": "val:new", "loss": 2.5, "ppl": math.exp(2.5),
                                    "path": "x", "best": True, "nan": float("nan")})
    assert step == 7
    assert scalars == {"val:new/epoch": 0.5, "val:new/loss": 2.5, "val:new/ppl": math.exp(2.5)}


def test_an_event_becomes_a_marker_with_its_numbers():
    assert record_scalars({"event": "recovery", "step": 4, "restored_step": 2, "restored_from": "ckpt",
                           "skipped_micro_batches": [3, 3]}) == (4, {"events/recovery": 1.0,
                                                                     "events/recovery/restored_step": 2.0})
    assert record_scalars({"event": "checkpoint", "step": 4, "kind": "best", "path": "p"}) == (
        4, {"events/checkpoint_best": 1.0})


def test_steps_a_tracker_holds_are_not_sent_again():
    backend = Recording()
    backend.skip_through = {"train/loss": 8, "val/loss": 4}
    for step in (5, 8, 9):
        backend.write(step, {"train/loss": float(step), "val/loss": -float(step)})
    assert backend.sent == [(5, {"val/loss": -5.0}), (8, {"val/loss": -8.0}),
                            (9, {"train/loss": 9.0, "val/loss": -9.0})]


def test_rewind_keeps_what_was_sent_before_a_recovery():
    backend = Recording()
    for step in (1, 2, 3):
        backend.write(step, {"train/loss": float(step)})
    backend.rewind(1)  # restored step 1: steps 2 and 3 replay with the same values
    for step in (2, 3, 4):
        backend.write(step, {"train/loss": float(step)})
    assert [step for step, _ in backend.sent] == [1, 2, 3, 4]
