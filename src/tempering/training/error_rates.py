"""Word and character error rates of transcripts against references, over a whole set (jiwer).

An error rate is not a mean of per-utterance rates: it is the edits (substitutions,
deletions, insertions) summed over the set divided by the reference words (or characters)
summed over the set, which is what `jiwer` computes for a list of pairs.
"""

from __future__ import annotations

from tempering.errors import UserError


def error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """{"wer", "cer"} of `hypotheses` against `references` (pairs with an empty reference are left out)."""
    try:
        import jiwer
    except ImportError as error:
        raise UserError("word error rates need jiwer: pip install 'tempering[speech]' (or pip install jiwer)") from error
    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r.strip()]
    if not pairs:
        return {"wer": 0.0, "cer": 0.0}
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    return {"wer": jiwer.wer(refs, hyps), "cer": jiwer.cer(refs, hyps)}
