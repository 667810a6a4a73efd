"""Near-duplicate removal: MinHash over word 5-gram shingles, LSH bands, connected components.

Pipeline, per document (in the worker processes, `band_hashes`):
  normalise (lowercase, punctuation to spaces, whitespace folded) → word 5-gram shingles, each a
  64-bit hash → MinHash signature of `num_perm` values → one 64-bit hash per band of `rows` values.
Then over the whole corpus (`NearDedupIndex`): documents whose hashes agree in any band are
candidate pairs; optionally each pair is checked by its exact shingle Jaccard; the candidate (or
verified) pairs are joined into clusters and each cluster keeps its first document in input order.

Why hand-written, not `datasketch`: `datasketch.MinHash` hashes every shingle with SHA-1 in a
Python call and `MinHashLSH` keeps per-key Python dicts; the numpy code here hashes all of a
document's shingles in a few vectorised passes and was measured well ahead of it on one core
(benchmarks/near_dedup.py, docs/performance.md). The pieces:
  - a shingle's hash is the polynomial hash of its normalised UTF-8 bytes, computed for every
    shingle at once from one prefix-sum array (x_j * P^j summed, mod 2^64, then shifted by the
    inverse power of P), then mixed by the splitmix64 finaliser;
  - permutation k maps a hash h to the top 32 bits of (a_k * h + b_k) mod 2^64 (multiply-add-shift,
    a universal family), a_k odd and b_k drawn from a fixed seed, so every run, machine and worker
    count gives the same signatures;
  - clusters are the connected components of the pair graph, found by vectorised label
    propagation with pointer jumping (the same result as union-find, without a Python loop per
    pair); a component's label is its smallest document index, so "keep the first" is label == index.
Memory: `bands` 64-bit hashes per eligible document (the signatures themselves are dropped once
banded) and its number; `--verify-jaccard` adds each document's count of distinct shingles (4 bytes),
which sizes the batches of the exact check (data/filtering.py) by the bytes they really hold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

SHINGLE_WORDS = 5
MINHASH_SEED = 42
# Shingles hashed per block: bounds the (block × num_perm) uint64 temporary to a few MB.
BLOCK_SHINGLES = 1024
# Longest text hashed in one piece (longer ones go in overlapping segments).
SEGMENT_CHARS = 1 << 20
# Weights of false positives in derive_bands: balanced when candidates are removed as found;
# low when each is checked by its exact Jaccard, which removes false positives at the cost of a
# little time, so only misses count (for 0.8 and 112 permutations: 14 bands x 8 rows, datatrove's).
BALANCED_FALSE_POSITIVE_WEIGHT = 0.5
VERIFIED_FALSE_POSITIVE_WEIGHT = 0.05
# With an exact check, each document is checked against up to this many earlier documents sharing a band hash.
VERIFY_PARTNERS = 32
_POLY = np.uint64(0x100000001B3)  # odd, so invertible mod 2^64
_MASK64 = (1 << 64) - 1
_SPACE = 32
_WHITESPACE = re.compile(r"\s")
# ASCII letters and digits map to themselves (lowercase already), everything else to a space.
_ASCII_MAP = np.array([code if chr(code).isalnum() else _SPACE for code in range(128)], np.uint32)

# Powers of _POLY and of its inverse mod 2^64, grown on demand.
_powers = np.ones(1, np.uint64)
_inverse_powers = np.ones(1, np.uint64)


def _normalised_codes(text: str) -> np.ndarray:
    """The code points of `text` lowercased, every non-alphanumeric character a space, spaces folded, stripped."""
    codes = np.frombuffer(text.lower().encode("utf-32-le"), np.uint32)
    ascii_codes = codes < 128
    codes = np.where(ascii_codes, _ASCII_MAP[codes & 127], codes)
    if not ascii_codes.all():  # the few distinct non-ASCII characters are judged one by one
        distinct = np.unique(codes[~ascii_codes])
        symbols = [code for code in distinct.tolist() if not chr(code).isalnum()]
        if symbols:
            codes[np.isin(codes, symbols)] = _SPACE
    space = codes == _SPACE
    keep = ~space
    keep[1:] |= ~space[:-1]  # a space right after a word stays: one space between words
    codes = codes[keep]
    return codes[:-1] if len(codes) and codes[-1] == _SPACE else codes


def normalise_for_shingles(text: str) -> str:
    """Lowercase `text`, turn every non-alphanumeric character into a space, fold whitespace to single spaces."""
    return _normalised_codes(text).tobytes().decode("utf-32-le")


def mix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (spreads every input bit over the output)."""
    values = values ^ (values >> np.uint64(30))
    values = values * np.uint64(0xBF58476D1CE4E5B9)
    values = values ^ (values >> np.uint64(27))
    values = values * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def _grow_powers(length: int) -> None:
    global _powers, _inverse_powers
    if len(_powers) > length:
        return
    size = max(length + 1, 2 * len(_powers))
    _powers = _powers_of(_POLY, size)
    _inverse_powers = _powers_of(np.uint64(pow(int(_POLY), -1, 1 << 64)), size)


def _code_shingle_hashes(codes: np.ndarray, num_words: int) -> np.ndarray:
    """Hashes of the word `num_words`-grams of normalised code points (one hash if there are fewer words)."""
    _grow_powers(len(codes))
    spaces = np.flatnonzero(codes == _SPACE)
    starts = np.concatenate([[0], spaces + 1])
    ends = np.concatenate([spaces, [len(codes)]])
    first, last = starts[:max(len(starts) - num_words + 1, 1)], ends[min(num_words, len(ends)) - 1:]
    prefix = np.zeros(len(codes) + 1, np.uint64)
    np.cumsum(codes * _powers[:len(codes)], dtype=np.uint64, out=prefix[1:])
    return mix64((prefix[last] - prefix[first]) * _inverse_powers[first])


def shingle_hashes(text: str, num_words: int = SHINGLE_WORDS) -> np.ndarray:
    """64-bit hashes of the word n-grams of the normalised `text` (with repeats; empty when it has no word)."""
    if len(text) <= SEGMENT_CHARS:
        codes = _normalised_codes(text)
        return _code_shingle_hashes(codes, num_words) if len(codes) else np.zeros(0, np.uint64)
    # A very long text goes in segments cut at whitespace; each starts with the last
    # num_words - 1 words of the one before, so no shingle is lost and memory stays bounded.
    pieces, carry, start = [], np.zeros(0, np.uint32), 0
    while start < len(text):
        end = _cut_at_space(text, start + SEGMENT_CHARS)
        codes = _normalised_codes(text[start:end])
        start = end
        if len(carry):
            codes = np.concatenate([carry, [_SPACE], codes]).astype(np.uint32) if len(codes) else carry
        word_starts = np.flatnonzero(codes == _SPACE) + 1
        if len(word_starts) + 1 < num_words:  # not one whole shingle yet: all of it carries over
            carry = codes
            continue
        pieces.append(_code_shingle_hashes(codes, num_words))
        carry = codes[word_starts[len(word_starts) - num_words + 1]:] if num_words > 1 else codes[:0]
    if not pieces and len(carry):  # fewer words than a shingle in all: they are one shingle
        pieces.append(_code_shingle_hashes(carry, num_words))
    return np.concatenate(pieces) if pieces else np.zeros(0, np.uint64)


def _cut_at_space(text: str, position: int) -> int:
    """The first whitespace position at or after `position` (the text's end if none)."""
    match = _WHITESPACE.search(text, position)
    return match.start() if match else len(text)


@dataclass(frozen=True)
class MinHashParams:
    """Permutations, bands and rows of the signature (bands × rows ≤ num_perm)."""

    num_perm: int
    bands: int
    rows: int

    def coefficients(self) -> tuple[np.ndarray, np.ndarray]:
        """The (a, b) of every permutation, drawn from a fixed seed; a is odd."""
        generator = np.random.Generator(np.random.PCG64(MINHASH_SEED))
        a = generator.integers(0, 1 << 63, self.num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        b = generator.integers(0, 1 << 63, self.num_perm, dtype=np.uint64)
        return a, b


def minhash_signature(hashes: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The MinHash signature (uint32, one value per permutation) of a set of 64-bit shingle hashes."""
    # min over x of (a*x + b) >> 32 equals (min over x of a*x + b) >> 32, so shift once at the end.
    signature = np.full(len(a), _MASK64, np.uint64)
    block = np.empty((min(len(hashes), BLOCK_SHINGLES), len(a)), np.uint64)
    for start in range(0, len(hashes), BLOCK_SHINGLES):
        chunk = hashes[start:start + BLOCK_SHINGLES]
        values = block[:len(chunk)]
        np.multiply(chunk[:, None], a[None, :], out=values)
        values += b
        np.minimum(signature, values.min(axis=0), out=signature)
    return (signature >> np.uint64(32)).astype(np.uint32)


def distinct_shingles(text: str) -> np.ndarray:
    """The shingle set of `text` as its sorted distinct 64-bit shingle hashes (what the exact Jaccard check compares).

    Two different shingles of ordinary text get the same hash with probability about 2^-64, so a
    pair of documents with n and m shingles has a collision with probability about n*m / 2^64
    (5e-14 for two documents of 1,000 shingles): the Jaccard of the hash sets is the Jaccard of the
    shingle sets. (A polynomial hash mod 2^64 can be made to collide by text crafted for it; the
    splitmix64 finaliser does not undo that. A collision only nudges one pair's Jaccard.) Each
    shingle costs 8 bytes here, against ~70 for a Python set of its string.
    """
    return np.unique(shingle_hashes(text))


def band_hashes(texts: Iterable[str], params: MinHashParams) -> np.ndarray:
    """(documents, bands) uint64: one hash per band of each text's signature; 0 for a text with no word."""
    return _signed(texts, params, count=False)[0]


def minhash_bands(texts: Iterable[str], params: MinHashParams) -> tuple[np.ndarray, np.ndarray]:
    """`band_hashes` of the texts, and each text's number of distinct shingles (uint32; a sort more per text)."""
    return _signed(texts, params, count=True)


def _signed(texts: Iterable[str], params: MinHashParams, *, count: bool) -> tuple[np.ndarray, np.ndarray]:
    """Band hashes and, when `count`, numbers of distinct shingles (else the numbers of shingles with repeats)."""
    a, b = params.coefficients()
    a, b = a[:params.bands * params.rows], b[:params.bands * params.rows]
    texts = list(texts)
    signatures = np.zeros((len(texts), params.bands * params.rows), np.uint64)
    sizes = np.zeros(len(texts), np.uint32)
    for index, text in enumerate(texts):
        # The minimum over a set: repeated shingles change nothing, so they are dropped only when counted.
        hashes = distinct_shingles(text) if count else shingle_hashes(text)
        sizes[index] = len(hashes)
        if len(hashes):
            signatures[index] = minhash_signature(hashes, a, b)
    bands = signatures.reshape(len(texts), params.bands, params.rows)
    weights = _powers_of(np.uint64(0x9E3779B97F4A7C15), params.rows)
    result = mix64((bands * weights).sum(axis=2, dtype=np.uint64) + np.arange(params.bands, dtype=np.uint64))
    result[sizes == 0] = 0
    return result, sizes


def _powers_of(base: np.uint64, count: int) -> np.ndarray:
    """base**0 .. base**(count-1) mod 2^64."""
    factors = np.full(count, base, np.uint64)
    factors[0] = 1
    return np.cumprod(factors, dtype=np.uint64)


def derive_bands(threshold: float, num_perm: int, *,
                 false_positive_weight: float = BALANCED_FALSE_POSITIVE_WEIGHT) -> tuple[int, int]:
    """(bands, rows) with bands × rows ≤ num_perm minimising the weighted LSH error around `threshold`.

    The error is the probability mass of candidate pairs below the threshold (false positives)
    and of missed pairs above it (false negatives), integrated over Jaccard similarity, as in
    Leskovec et al., "Mining of Massive Datasets", ch. 3 (and datasketch's `_optimal_param`).
    """
    grid = np.linspace(0.0, 1.0, 2001)
    best, best_error = (1, 1), np.inf
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            probability = 1.0 - (1.0 - grid ** rows) ** bands
            below, above = grid <= threshold, grid >= threshold
            false_positive = _integral(probability[below], grid[below])
            false_negative = _integral(1.0 - probability[above], grid[above])
            error = false_positive_weight * false_positive + (1.0 - false_positive_weight) * false_negative
            if error < best_error - 1e-12:
                best, best_error = (bands, rows), error
    return best


def _integral(values: np.ndarray, points: np.ndarray) -> float:
    """Trapezoid-rule integral (numpy.trapezoid is numpy 2 only)."""
    return float(np.sum((values[1:] + values[:-1]) * np.diff(points)) / 2)


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """Probability that two documents of Jaccard `similarity` share at least one band."""
    return 1.0 - (1.0 - similarity ** rows) ** bands


def connected_components(num_nodes: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Label each node with the smallest node index of its component in the graph of edges (first[i], second[i])."""
    labels = np.arange(num_nodes, dtype=np.int64)
    if len(first) == 0:
        return labels
    while True:
        lowest = np.minimum(labels[first], labels[second])
        updated = labels.copy()
        np.minimum.at(updated, first, lowest)
        np.minimum.at(updated, second, lowest)
        updated = updated[updated]  # pointer jumping: follow each label to its own label
        while True:
            jumped = updated[updated]
            if np.array_equal(jumped, updated):
                break
            updated = jumped
        if np.array_equal(updated, labels):
            return labels
        labels = updated


def exact_jaccard(first: np.ndarray, second: np.ndarray) -> float:
    """Jaccard similarity of two sorted arrays of distinct shingle hashes."""
    if len(first) == 0 and len(second) == 0:
        return 1.0
    if len(first) > len(second):
        first, second = second, first
    if len(first) == 0:
        return 0.0
    # Look each hash of the shorter set up in the longer one (both sorted): no merged copy, no sort.
    positions = np.minimum(np.searchsorted(second, first), len(second) - 1)
    common = int(np.count_nonzero(second[positions] == first))
    return common / (len(first) + len(second) - common)


class NearDedupIndex:
    """Band hashes of the eligible documents, in input order; finds candidate pairs and which documents to remove."""

    def __init__(self, params: MinHashParams, *, keep_sizes: bool = False):
        self.params = params
        self.keep_sizes = keep_sizes  # keep each document's number of distinct shingles (for the exact check)
        self._hashes: list[np.ndarray] = []  # (eligible documents, bands) per added batch
        self._members: list[np.ndarray] = []  # their document numbers
        self._sizes: list[np.ndarray] = []  # distinct shingles of every document (0 if not eligible)
        self.num_documents = 0
        self.num_clusters = 0  # clusters of more than one document, once `removed` has run

    def add(self, hashes: np.ndarray, eligible: np.ndarray, sizes: np.ndarray | None = None) -> None:
        """Append the band hashes (documents × bands) of the next documents; ineligible ones never match.

        `sizes`, each document's number of distinct shingles, is required and kept with `keep_sizes`.
        """
        if self.keep_sizes and sizes is None:
            raise ValueError("this NearDedupIndex keeps shingle sizes: pass them to add")
        eligible = eligible & (hashes[:, 0] != 0) if len(hashes) else eligible
        rows = np.flatnonzero(eligible)
        self._hashes.append(hashes[rows])  # a copy: the batch's own array is not kept alive
        self._members.append(rows + self.num_documents)
        if self.keep_sizes:
            self._sizes.append(np.where(eligible, sizes, 0).astype(np.uint32))
        self.num_documents += len(hashes)

    @property
    def num_bytes(self) -> int:
        """Memory held by the index (band hashes, document numbers, shingle counts)."""
        return sum(piece.nbytes for pieces in (self._hashes, self._members, self._sizes) for piece in pieces)

    def shingle_sizes(self) -> np.ndarray:
        """Each document's number of distinct shingles (0 for an ineligible one), as given to `add`."""
        if not self.keep_sizes:
            raise ValueError("this NearDedupIndex was made without keep_sizes")
        return np.concatenate(self._sizes) if self._sizes else np.zeros(0, np.uint32)

    def candidate_pairs(self, partners: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Distinct (earlier, later) document index pairs that share a band hash.

        Each document is paired with the `partners` documents before it among those sharing the
        band's hash (1: a chain, which already connects every cluster; more: the pairs an exact
        check needs, since two members can be similar while the run's first is not).
        """
        members = np.concatenate(self._members) if self._members else np.zeros(0, np.int64)
        scale = max(self.num_documents, 1)
        pairs = np.zeros(0, np.int64)  # first * scale + second, distinct; merged band by band to stay small
        for band in range(self.params.bands):
            # One band's column at a time: never a second copy of the whole index.
            column = np.concatenate([piece[:, band] for piece in self._hashes]) if self._hashes else np.zeros(0, np.uint64)
            order = np.argsort(column, kind="stable")  # ties keep input order: earlier documents first
            values, ordered = column[order], members[order]
            del column, order
            keys = []
            for offset in range(1, partners + 1):
                same = values[offset:] == values[:-offset]
                if not same.any():
                    break
                keys.append(ordered[:-offset][same] * scale + ordered[offset:][same])
            if keys:
                pairs = np.union1d(pairs, np.concatenate(keys))
        return pairs // scale, pairs % scale

    def removed(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Boolean mask of documents to remove: every member of a cluster but its first in input order."""
        labels = connected_components(self.num_documents, first, second)
        removed = labels != np.arange(self.num_documents)
        self.num_clusters = int(len(np.unique(labels[removed])))
        return removed
