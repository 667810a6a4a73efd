"""MinHash near-dedup pieces: normalisation, shingle hashes, signatures, LSH pairs, clusters."""

from __future__ import annotations

from pydoc_data.topics import topics

import numpy as np
import pytest

import tempering.data.near_dedup as near_dedup
from tempering.data.near_dedup import (
    MinHashParams,
    NearDedupIndex,
    band_hashes,
    candidate_probability,
    connected_components,
    derive_bands,
    distinct_shingles,
    exact_jaccard,
    minhash_bands,
    minhash_signature,
    normalise_for_shingles,
    shingle_hashes,
)

DOCUMENTS = [text[:1200] for _, text in sorted(topics.items())[:40]]


def test_normalisation_folds_case_punctuation_and_whitespace():
    assert normalise_for_shingles("  Hello,\tWORLD!  It's — “snake_case” …\n") == "hello world it s snake case"
    assert normalise_for_shingles("Été à Paris") == "été à paris"
    assert normalise_for_shingles("!!! ...") == ""


def test_shingles_ignore_formatting_and_count_word_five_grams():
    plain = shingle_hashes("one two three four five six")
    assert len(plain) == 2  # (one..five), (two..six)
    assert np.array_equal(plain, shingle_hashes("One,  two; THREE\nfour -- five six!"))
    assert len(shingle_hashes("just three words")) == 1  # shorter than a shingle: one shingle of it all
    assert len(shingle_hashes("?!")) == 0
    assert len(np.unique(shingle_hashes(DOCUMENTS[0]))) > 100


def test_a_long_text_hashed_in_segments_gives_the_same_shingles(monkeypatch):
    text = " ".join(DOCUMENTS[:10])
    whole = shingle_hashes(text)
    for segment in (7, 100, 1000):
        monkeypatch.setattr(near_dedup, "SEGMENT_CHARS", segment)
        assert np.array_equal(shingle_hashes(text), whole), segment


def word_shingles(text: str) -> set[str]:
    """The word 5-grams of the normalised text as strings: the sets the hashes stand for."""
    words = normalise_for_shingles(text).split(" ")
    return {" ".join(words[start:start + 5]) for start in range(max(len(words) - 4, 1))}


def test_jaccard_of_hashed_shingles_is_the_jaccard_of_the_shingle_strings():
    texts = [text for _, text in sorted(topics.items())[:60]]
    variants = [texts[0], texts[0][:900], one_word_changed(texts[0], 25), texts[0] + " " + texts[1][:300], texts[2]]
    for text in texts + variants:
        assert len(distinct_shingles(text)) == len(word_shingles(text))  # no two shingles share a hash
    for first in variants:
        for second in variants:
            union = word_shingles(first) | word_shingles(second)
            truth = len(word_shingles(first) & word_shingles(second)) / len(union)
            assert exact_jaccard(distinct_shingles(first), distinct_shingles(second)) == truth


def test_exact_jaccard_counts_the_common_hashes_of_sorted_sets():
    generator = np.random.default_rng(0)
    for size_a, size_b in ((0, 0), (0, 5), (7, 0), (1, 1), (50, 400), (400, 50), (300, 300)):
        a = np.unique(generator.integers(0, 600, size_a, dtype=np.uint64))
        b = np.unique(generator.integers(0, 600, size_b, dtype=np.uint64))
        common = len(set(a.tolist()) & set(b.tolist()))
        expected = 1.0 if not len(a) and not len(b) else common / (len(a) + len(b) - common)
        assert exact_jaccard(a, b) == expected, (size_a, size_b)
    top = np.array([np.iinfo(np.uint64).max], np.uint64)
    assert exact_jaccard(top, top) == 1.0 and exact_jaccard(np.array([1], np.uint64), top) == 0.0


def test_minhash_bands_count_distinct_shingles_and_ignore_repeats():
    params = MinHashParams(112, 14, 8)
    repeated = " ".join([DOCUMENTS[4]] * 3)  # the same shingles three times (and a few across the joins)
    hashes, sizes = minhash_bands([DOCUMENTS[4], repeated, "?"], params)
    assert sizes.tolist() == [len(distinct_shingles(DOCUMENTS[4])), len(distinct_shingles(repeated)), 0]
    assert np.array_equal(hashes, band_hashes([DOCUMENTS[4], repeated, "?"], params))
    a, b = params.coefficients()
    assert np.array_equal(minhash_signature(shingle_hashes(repeated), a, b),
                          minhash_signature(distinct_shingles(repeated), a, b))


def test_signature_agreement_estimates_the_exact_jaccard():
    params = MinHashParams(num_perm=512, bands=1, rows=1)
    a, b = params.coefficients()
    words = DOCUMENTS[5].split()
    for cut in (20, 60, 100):  # drop a different share of the words
        first, second = np.unique(shingle_hashes(" ".join(words))), np.unique(shingle_hashes(" ".join(words[cut:])))
        truth = exact_jaccard(first, second)
        estimate = np.mean(minhash_signature(first, a, b) == minhash_signature(second, a, b))
        assert abs(estimate - truth) < 4 * np.sqrt(truth * (1 - truth) / 512) + 0.01, (cut, truth, estimate)


def test_signatures_are_fixed_by_the_seed_not_the_process():
    params = MinHashParams(112, 14, 8)
    first, again = band_hashes(DOCUMENTS[:5], params), band_hashes(DOCUMENTS[:5], params)
    assert np.array_equal(first, again)
    assert first.shape == (5, 14) and len(np.unique(first)) == 70
    assert np.array_equal(band_hashes(["", "?"], params), np.zeros((2, 14), np.uint64))  # no words: never matches


def test_derived_bands_fit_the_permutations_and_put_the_threshold_on_the_curve():
    for threshold, num_perm in ((0.8, 112), (0.5, 128), (0.9, 64)):
        bands, rows = derive_bands(threshold, num_perm)
        assert bands * rows <= num_perm
        assert candidate_probability(threshold - 0.2, bands, rows) < 0.5 < candidate_probability(
            min(threshold + 0.1, 1.0), bands, rows)


def test_connected_components_label_each_node_with_its_components_first():
    labels = connected_components(7, np.array([5, 1, 3, 4]), np.array([6, 3, 6, 5]))
    assert labels.tolist() == [0, 1, 2, 1, 1, 1, 1]
    assert connected_components(3, np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == [0, 1, 2]


def one_word_changed(text: str, position: int) -> str:
    words = text.split(" ")
    words[position] = "CHANGED"
    return " ".join(words)


@pytest.mark.parametrize("verify", [False, True])
def test_index_removes_planted_near_copies_and_keeps_the_first(verify):
    planted = {40: one_word_changed(DOCUMENTS[3], 30), 41: DOCUMENTS[7] + " An extra closing sentence.",
               42: one_word_changed(DOCUMENTS[3], 60)}
    mixed = DOCUMENTS[10][:600] + DOCUMENTS[11][600:]  # half of each: Jaccard well below 0.8
    texts = DOCUMENTS + list(planted.values()) + [mixed]
    params = MinHashParams(112, *derive_bands(0.8, 112))
    index = NearDedupIndex(params)
    hashes = band_hashes(texts, params)
    index.add(hashes[:20], np.ones(20, bool))
    index.add(hashes[20:], np.ones(len(texts) - 20, bool))
    first, second = index.candidate_pairs()
    if verify:
        sets = {i: np.unique(shingle_hashes(texts[i])) for i in set(first.tolist()) | set(second.tolist())}
        similar = np.array([exact_jaccard(sets[a], sets[b]) >= 0.8 for a, b in zip(first, second, strict=True)], bool)
        first, second = first[similar], second[similar]
    removed = np.flatnonzero(index.removed(first, second)).tolist()
    assert removed == sorted(planted)
    assert index.num_clusters == 2  # document 3 with its two copies, document 7 with its one


def test_ineligible_documents_never_pair():
    params = MinHashParams(112, 14, 8)
    index = NearDedupIndex(params)
    index.add(band_hashes([DOCUMENTS[0], DOCUMENTS[0]], params), np.array([True, False]))
    assert len(index.candidate_pairs()[0]) == 0


def test_index_holds_only_eligible_documents_and_their_shingle_sizes():
    params = MinHashParams(112, 14, 8)
    texts = [DOCUMENTS[0], DOCUMENTS[1], "?", DOCUMENTS[0], DOCUMENTS[1]]
    hashes, sizes = minhash_bands(texts, params)
    index = NearDedupIndex(params, keep_sizes=True)
    index.add(hashes[:2], np.array([True, False]), sizes[:2])
    index.add(hashes[2:], np.array([True, True, True]), sizes[2:])
    assert [pair.tolist() for pair in index.candidate_pairs(partners=32)] == [[0], [3]]  # 1 and 4: 1 is ineligible
    assert index.shingle_sizes().tolist() == [sizes[0], 0, 0, sizes[3], sizes[4]]
    assert index.num_bytes == 3 * (14 * 8 + 8) + 5 * 4  # three eligible documents' bands and numbers, five sizes
    with pytest.raises(ValueError, match="keep_sizes"):
        NearDedupIndex(params).shingle_sizes()


def test_exact_checks_see_every_earlier_partner_in_a_band_not_just_the_first():
    index = NearDedupIndex(MinHashParams(4, 2, 2))
    hashes = np.array([[7, 1], [7, 2], [7, 3], [9, 4]], np.uint64)  # documents 0-2 share band 0
    index.add(hashes, np.ones(4, bool))
    assert [pair.tolist() for pair in index.candidate_pairs()] == [[0, 1], [1, 2]]  # a chain connects them
    assert [pair.tolist() for pair in index.candidate_pairs(partners=32)] == [[0, 0, 1], [1, 2, 2]]
