"""Which model families train on speech (their stages live in `training/speech.py`)."""

from __future__ import annotations

from tempering.models.family import ModelFamily

SPEECH_FAMILIES = frozenset({"audio_encoder", "talker"})


def is_speech_family(family: ModelFamily) -> bool:
    """Whether `family` trains on speech CSVs (`training/speech.py`) rather than token data."""
    return family.name in SPEECH_FAMILIES
