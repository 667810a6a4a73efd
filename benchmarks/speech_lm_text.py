"""Text for the ASR's word language model: every prose sentence of the Python docs, minus the sentences scored on.

    python benchmarks/speech_lm_text.py --output /tmp/lm.txt [--exclude ../shared/data/speech/espeak/val.csv DEV.csv]

Lines of ../shared/data/text/pydocs_{train,val}.jsonl.gz are split into sentences after `.`, `!`,
`?` and normalised like ASR transcripts; a sentence is dropped when any transcript of an
--exclude CSV occurs inside it (not only when equal), so the model never saw a scored sentence.
The shared speech val split was drawn from the same docs, which is why the exclusion matters.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from speech_synthesise import paragraphs, split_sentences

from tempering.data.audio.text import normalize_transcript

REPO = Path(__file__).resolve().parents[1]
TEXT = REPO.parent / "shared" / "data" / "text"


def main() -> None:
    """Write the filtered, normalised sentences one per line; print how many were kept and dropped."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="the text file to write")
    parser.add_argument("--exclude", type=Path, nargs="+",
                        default=[REPO.parent / "shared" / "data" / "speech" / "espeak" / "val.csv"],
                        help="speech CSVs whose transcripts must not occur in the text (default: the shared val)")
    parser.add_argument("--corpus", type=Path, nargs="+",
                        default=[TEXT / "pydocs_train.jsonl.gz", TEXT / "pydocs_val.jsonl.gz"],
                        help="JSONL.gz files of {'text': ...} documents")
    args = parser.parse_args()
    excluded = set()
    for file in args.exclude:
        with open(file, newline="", encoding="utf-8") as handle:
            excluded |= {row["transcript"] for row in csv.DictReader(handle)}
    kept, dropped, seen = [], 0, set()
    for corpus in args.corpus:
        for paragraph in paragraphs(corpus):
            for sentence in split_sentences(paragraph):
                words = normalize_transcript(sentence)
                if len(words.split()) < 2 or words in seen:
                    continue
                seen.add(words)
                if any(scored in words for scored in excluded):
                    dropped += 1
                else:
                    kept.append(words)
    args.output.write_text("\n".join(kept) + "\n", encoding="utf-8")
    print(json.dumps({"sentences": len(kept), "words": sum(len(s.split()) for s in kept), "dropped": dropped}))


if __name__ == "__main__":
    main()
