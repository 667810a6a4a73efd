#!/usr/bin/env bash
# The vision part of the omni family on built-in images (no download), as plain commands:
# sample images -> prep -> tokenizer -> caption decoder -> captioner (pretrain) -> generate -> eval
# -> post-train on rendered words (reading). Re-running it resumes or skips finished steps.
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
