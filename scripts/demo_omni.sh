#!/usr/bin/env bash
# The omni family as plain commands: the vision part on built-in images (no download), then speech on the
# espeak-ng clips in ../shared/data/speech when present (SPEECH_DATA):
# sample images -> prep -> tokenizer -> caption decoder -> captioner (pretrain) -> generate -> eval
# -> post-train on rendered words (reading); speech prep -> ASR -> transcribe -> eval -> Talker -> speak -> eval.
# Re-running it resumes or skips finished steps.
set -euo pipefail
OUT="${DEMO_DIR:-demo}"
LM_STEPS="${LM_STEPS:-300}"          # caption decoder steps
VISION_STEPS="${VISION_STEPS:-300}"  # captioner steps (scenes), and post-training steps (words)
NUM_IMAGES="${NUM_IMAGES:-2000}"

echo "== 1. sample images: shape scenes (some colour-shape pairs held out of training) and rendered words"
if [ -f "$OUT/images/scenes.json" ]; then
  echo "sample images already written: $OUT/images"
else
  temper sample-corpus --images --output "$OUT/images" --num-images "$NUM_IMAGES"
fi
temper sample-corpus --output "$OUT/corpus"

echo "== 2. prep: pair images with captions from a folder (here: the scene images and a TAB-separated caption file)"
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
rows = json.load(open(f"{out}/images/scenes.json"))
with open(f"{out}/images/scenes_captions.txt", "w") as handle:
    handle.writelines(f"{row['image'].rsplit('/', 1)[-1]}\t{row['caption']}\n" for row in rows)
with open(f"{out}/captions.txt", "w") as handle:  # the caption decoder's text: one document per caption
    for name in ("scenes", "words"):
        handle.write("\n\n".join(r["caption"] for r in json.load(open(f"{out}/images/{name}.json"))) + "\n\n")
PY
temper prep --format images --input "$OUT/images/scenes/train" --caption-file "$OUT/images/scenes_captions.txt" \
  --output "$OUT/images/scenes_prepped.json" --val-fraction 0.05

echo "== 3. tokenizer (512 tokens) and the caption decoder: the tiny preset on the training captions"
if [ ! -f "$OUT/caption_tokenizer/tokenizer.json" ]; then
  temper tokenizer train --input "$OUT/corpus/prose/train.jsonl" "$OUT/captions.txt" --vocab-size 512 \
    --output "$OUT/caption_tokenizer"
fi
temper pretrain --preset tiny --data "$OUT/captions.txt" --tokenizer "$OUT/caption_tokenizer" \
  --save-dir "$OUT/runs/caption_lm" --seq-len 64 --batch-size 32 --lr 3e-3 --warmup-steps 20 --max-steps "$LM_STEPS" \
  --val-split 0.02 --eval-steps "$LM_STEPS"

echo "== 4. the captioner: vision_small (encoder + projector) on the scenes, the decoder trained with it"
temper pretrain --config configs/vision.yaml run.save_dir="$OUT/runs/vision_scenes" vision.lm="$OUT/runs/caption_lm" \
  data.datasets.0.path="$OUT/images/scenes.json" training.max_steps="$VISION_STEPS"

echo "== 5. caption a held-out scene, and score the validation images (loss, exact match, CER)"
temper generate --checkpoint "$OUT/runs/vision_scenes" --image "$OUT/images/scenes/val/00000.png"
python3 -c "import json,sys; print('reference:', json.load(open(sys.argv[1]))[0]['caption'])" "$OUT/images/scenes.val.json"
temper eval --checkpoint "$OUT/runs/vision_scenes" --data "$OUT/images/scenes.val.json"

echo "== 6. post-train the captioner on rendered words (type detected from the checkpoint)"
temper post-train --config configs/vision_post_train.yaml checkpoint.source_path="$OUT/runs/vision_scenes" \
  run.save_dir="$OUT/runs/vision_words" data.datasets.0.path="$OUT/images/words.json" \
  training.max_steps="$VISION_STEPS"
temper generate --checkpoint "$OUT/runs/vision_words" --image "$OUT/images/words/val/00000.png"

SPEECH="${SPEECH_DATA:-../shared/data/speech/espeak}"
ASR_STEPS="${ASR_STEPS:-150}"        # speech recogniser steps
TALKER_STEPS="${TALKER_STEPS:-60}"   # Talker steps
if [ ! -f "$SPEECH/train.csv" ]; then
  echo "== speech skipped: no $SPEECH/train.csv (set SPEECH_DATA to a folder with train.csv and val.csv speech CSVs)"
  exit 0
fi

echo "== 7. speech prep: a folder of audio and a transcript file -> a speech CSV (here: 40 of the espeak-ng clips)"
mkdir -p "$OUT/speech/clips"
python3 - "$SPEECH" "$OUT/speech" <<'PY'
import csv, os, shutil, sys
source, out = os.path.abspath(sys.argv[1]), sys.argv[2]
rows = list(csv.DictReader(open(f"{source}/train.csv", encoding="utf-8")))[:40]
with open(f"{out}/transcripts.tsv", "w", encoding="utf-8") as handle:
    for row in rows:
        name = row["path"].rsplit("/", 1)[-1]
        shutil.copy(f"{source}/{row['path']}", f"{out}/clips/{name}")
        handle.write(f"{name}\t{row['text']}\n")
with open(f"{out}/val_small.csv", "w", newline="", encoding="utf-8") as handle:  # 24 val clips, absolute paths
    writer = csv.writer(handle)
    writer.writerow(["path", "transcript"])
    for row in list(csv.DictReader(open(f"{source}/val.csv", encoding="utf-8")))[:24]:
        writer.writerow([f"{source}/{row['path']}", row["transcript"]])
PY
temper prep --format audio_asr --input "$OUT/speech/clips" --transcripts "$OUT/speech/transcripts.tsv" \
  --output "$OUT/speech/clips.csv"

echo "== 8. speech recognition: audio_enc_small with CTC on the espeak-ng train split (a short run: see docs/performance.md for a real one)"
temper pretrain --config configs/asr.yaml run.save_dir="$OUT/runs/asr" data.datasets.0.path="$SPEECH/train.csv" \
  --val-data "$OUT/speech/val_small.csv" training.max_steps="$ASR_STEPS" training.eval_steps="$ASR_STEPS" \
  training.save_steps="$ASR_STEPS"
first_val=$(python3 -c "import csv,sys; print(next(csv.DictReader(open(sys.argv[1])))['path'])" "$OUT/speech/val_small.csv")
temper transcribe --checkpoint "$OUT/runs/asr" "$first_val"
python3 -c "import csv,sys; print('reference:', next(csv.DictReader(open(sys.argv[1])))['transcript'])" "$OUT/speech/val_small.csv"
temper eval --checkpoint "$OUT/runs/asr" --data "$OUT/speech/val_small.csv"

echo "== 9. the Talker: text -> mel frames, durations from the recogniser's CTC alignments; speak a sentence"
temper pretrain --preset talker_small --data "$SPEECH/train.csv" --val-data "$OUT/speech/val_small.csv" \
  --asr-checkpoint "$OUT/runs/asr" --save-dir "$OUT/runs/talker" --max-steps "$TALKER_STEPS" --batch-size 16 \
  --lr 1e-3 --warmup-steps 10 --eval-steps "$TALKER_STEPS" --save-steps "$TALKER_STEPS" training.eval_max_batches=1
temper generate --checkpoint "$OUT/runs/talker" --speak "Return the value of the named attribute." \
  --output "$OUT/speech/said.wav"
temper eval --checkpoint "$OUT/runs/talker" --data "$OUT/speech/val_small.csv" --max-batches 1
echo "wrote $OUT/speech/said.wav (16 kHz WAV; Griffin-Lim vocoder)"
