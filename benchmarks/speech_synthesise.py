"""More ASR training speech: prose sentences from the Python docs spoken by espeak-ng, as the shared set was made.

    python benchmarks/speech_synthesise.py --count 6000 --output /tmp/speech_more
    # writes /tmp/speech_more/synth/NNNNN.flac, synth.csv, and train_plus.csv (the shared
    # train split + the new rows, absolute paths) for `temper pretrain --data train_plus.csv`

The recipe follows ../shared/data/speech/README.md: one-line prose paragraphs of
../shared/data/text/pydocs_train.jsonl.gz split after `.`, `!`, `?`; kept when the sentence has
4–20 words, starts with a capital, ends with `. ? !`, holds only letters, spaces and `, ; : ' -`,
no ALL-CAPS or camelCase word and no one-letter word but *a* and *I*. (The shared set also
required every word to be in Debian's `wamerican` list, which is not installed here; code-like
words therefore slip into the extra training text, never into validation.) Any sentence whose
transcript is in the shared val or train split is dropped, so validation stays unseen. Each
sentence gets a voice (`en-us` twice as likely), a variant and a speed of 150–190 words per
minute drawn with a fixed seed; espeak-ng's 22,050 Hz output is resampled to 16 kHz with soxr
(the project's reader) and written as 16-bit FLAC. espeak-ng must be installed.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
VOICES = ["en-us", "en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-us-nyc", "en-029"]
VARIANTS = ["m1", "m2", "m3", "f1", "f2", "f3"]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_ALLOWED = re.compile(r"^[A-Z][A-Za-z' ,;:-]*[.!?]$")
_CAMEL = re.compile(r"[a-z][A-Z]")


def paragraphs(corpus: Path) -> Iterator[str]:
    """Every line of every document of a JSONL.gz corpus, stripped (a one-line paragraph each)."""
    with gzip.open(corpus, "rt", encoding="utf-8") as handle:
        for line in handle:
            for paragraph in json.loads(line)["text"].split("\n"):
                yield paragraph.strip()


def split_sentences(paragraph: str) -> list[str]:
    """The sentences of a paragraph: split after `.`, `!` or `?` and the whitespace that follows."""
    return _SENTENCE_END.split(paragraph)


def sentences(corpus: Path) -> list[str]:
    """Candidate sentences of the corpus in order, filtered by the shared set's rules (no word list)."""
    found = []
    for paragraph in paragraphs(corpus):
        paragraph = paragraph.replace("\u2019", "'").replace("\u2018", "'")
        if paragraph and "  " not in paragraph:
            found += [sentence for sentence in split_sentences(paragraph) if _keep(sentence)]
    return found


def _keep(sentence: str) -> bool:
    if not _ALLOWED.match(sentence) or _CAMEL.search(sentence) or "." in sentence[:-1]:
        return False
    words = re.findall(r"[A-Za-z']+", sentence)
    if not 4 <= len(words) <= 20:
        return False
    return all(not (len(w) > 1 and w.isupper()) and (len(w) > 1 or w in ("a", "I")) for w in words)


def read_rows(file: Path) -> list[dict]:
    """The rows of a CSV file as dicts."""
    with open(file, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def speak(text: str, voice: str, speed: int, path: Path) -> float:
    """Synthesise `text` with espeak-ng into a 16 kHz FLAC at `path`; return its duration in seconds."""
    import soundfile

    from tempering.data.audio.io import SAMPLE_RATE, resample

    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
                         capture_output=True, check=True).stdout
    samples, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    samples = resample(samples, rate, SAMPLE_RATE)
    soundfile.write(str(path), samples, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    return len(samples) / SAMPLE_RATE


def main() -> None:
    """Pick sentences, synthesise them, write synth.csv and train_plus.csv."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=6000, help="new utterances to synthesise (default 6000)")
    parser.add_argument("--output", type=Path, required=True, help="folder for synth/, synth.csv, train_plus.csv")
    parser.add_argument("--corpus", type=Path, default=SHARED / "text" / "pydocs_train.jsonl.gz",
                        help="JSONL.gz of {'text': ...} documents to take sentences from")
    parser.add_argument("--speech", type=Path, default=SHARED / "speech" / "espeak",
                        help="the shared speech set: its train.csv is included, its val/train sentences excluded")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sentence, voice and speed draws")
    parser.add_argument("--voice", default=None,
                        help="one voice for every sentence (e.g. en-us+m1, a single-speaker Talker set); train_plus.csv "
                             "then keeps only the shared train rows of that voice. Default: drawn per sentence")
    parser.add_argument("--speed", type=int, default=None, help="words per minute for every sentence (default: 150-190)")
    parser.add_argument("--sentences-of", type=Path, default=None,
                        help="speak exactly the sentences (`text` column) of this speech CSV instead of new ones, e.g. "
                             "the val split in the Talker's voice")
    parser.add_argument("--skip", type=int, default=0,
                        help="skip the first N sentences of the seeded draw (e.g. a dev set apart from an earlier "
                             "--count N run with the same seed)")
    parser.add_argument("--workers", type=int, default=2, help="espeak-ng processes at once (default 2)")
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is not installed (apt-get install -y espeak-ng)")
    from tempering.data.audio.text import normalize_transcript

    shared = {split: read_rows(args.speech / f"{split}.csv") for split in ("train", "val")}
    taken = {row["transcript"] for rows in shared.values() for row in rows}
    pool, seen = [], set()
    if args.sentences_of:
        taken = set()
        given = [row["text"] for row in read_rows(args.sentences_of)]
    for sentence in given if args.sentences_of else sentences(args.corpus):
        transcript = normalize_transcript(sentence)
        if transcript not in taken and transcript not in seen:
            seen.add(transcript)
            pool.append((sentence, transcript))
    rng = random.Random(args.seed)
    if not args.sentences_of:
        rng.shuffle(pool)
    if len(pool) < args.skip + args.count and not args.sentences_of:
        print(f"only {len(pool)} new sentences found; synthesising all of them", file=sys.stderr)
    chosen = pool[args.skip:args.skip + args.count]
    jobs = [(sentence, transcript, args.voice or f"{rng.choice(VOICES)}+{rng.choice(VARIANTS)}",
             args.speed or rng.randint(150, 190)) for sentence, transcript in chosen]
    (args.output / "synth").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool_:
        durations = list(pool_.map(lambda item: speak(item[1][0], item[1][2], item[1][3],
                                                      args.output / "synth" / f"{item[0]:05d}.flac"),
                                   enumerate(jobs)))
    fields = ["path", "transcript", "text", "voice", "duration_s"]
    rows = [{"path": f"synth/{i:05d}.flac", "transcript": t, "text": s, "voice": v, "duration_s": f"{d:.3f}"}
            for i, ((s, t, v, _), d) in enumerate(zip(jobs, durations, strict=True))]
    with open(args.output / "synth.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with open(args.output / "train_plus.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fields, extrasaction="ignore")
        writer.writeheader()
        kept = [row for row in shared["train"] if args.voice in (None, row["voice"])]
        for row in kept:
            writer.writerow({**row, "path": str((args.speech / row["path"]).resolve())})
        for row in rows:
            writer.writerow({**row, "path": str((args.output / row["path"]).resolve())})
    hours = sum(durations) / 3600
    print(json.dumps({"candidates": len(pool), "synthesised": len(rows), "hours": round(hours, 2),
                      "wall_s": round(time.perf_counter() - started, 1),
                      "train_plus_rows": len(rows) + len(kept)}))


if __name__ == "__main__":
    main()
