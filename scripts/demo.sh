#!/usr/bin/env bash
# The end-to-end demo on the built-in sample corpus:
# corpus -> tokenizer -> shards -> pretrain -> eval -> post-train -> generate -> SFT -> DPO -> chat -> lm-eval -> plot.
# Re-running it is safe: every step either reproduces its output or is a no-op.
set -euo pipefail
OUT="${DEMO_DIR:-demo}"

echo "== 1. sample corpus (prose + code from this Python installation)"
temper sample-corpus --output "$OUT/corpus"

echo "== 2. tokenizer (byte-level BPE, 8192 tokens, trained on both domains' train splits)"
if [ -f "$OUT/tokenizer/tokenizer.json" ]; then
  echo "tokenizer already trained: $OUT/tokenizer"
else
  temper tokenizer train --input "$OUT/corpus/prose/train.jsonl" "$OUT/corpus/code/train.jsonl" \
    --vocab-size 8192 --output "$OUT/tokenizer"
fi

echo "== 3. token shards, one directory per domain (5% of documents held out for validation)"
for domain in prose code; do
  temper prep --input "$OUT/corpus/$domain" --tokenizer "$OUT/tokenizer" \
    --output "$OUT/shards/$domain" --val-fraction 0.05 --seq-len 256
done

echo "== 4. pretrain the nano preset (~10M parameters) on the prose shards for a few CPU minutes"
# Re-running resumes from the newest checkpoint (or finds the run finished).
temper pretrain --preset nano --data "$OUT/shards/prose" --tokenizer "$OUT/tokenizer" --save-dir "$OUT/runs/base" \
  --max-steps 200 --batch-size 8 --seq-len 256 --lr 1e-3 --warmup-steps 20 \
  --eval-steps 50 --save-steps 50 training.eval_max_batches=8

echo "== 5. evaluate the best checkpoint on held-out prose and on code (a domain it has not seen)"
temper eval --checkpoint "$OUT/runs/base" --data prose="$OUT/shards/prose" code="$OUT/shards/code" --max-batches 16

echo "== 6. post-train on code, mixed with prose (combined), watching both validation sets"
temper post-train --checkpoint "$OUT/runs/base" --new-dataset "$OUT/shards/code" --old-dataset "$OUT/shards/prose" \
  --strategy combined --save-dir "$OUT/runs/code" --max-steps 100 --lr 3e-4 --warmup-steps 10 \
  --reset-scheduler --batch-size 8 --seq-len 256 --eval-steps 50 training.eval_max_batches=8
python3 - "$OUT/runs/code/summary.json" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
for split in ("val:original", "val:new"):
    print(f"{split:13s} ppl {summary['val_at_start'][split]['ppl']:8.1f} -> {summary['val_at_end'][split]['ppl']:8.1f}")
PY

echo "== 7. generate a continuation from the pretrained model"
temper generate --checkpoint "$OUT/runs/base" --prompt "The built-in function" --max-new-tokens 60 --temperature 0.7 --top-k 40

echo "== 8. SFT on the sample chat set (questions about stdlib names -> their docstrings), packed"
temper inspect-data --checkpoint "$OUT/runs/base" --data "$OUT/corpus/chat/chat_train.jsonl" --num-samples 1 --seq-len 256
temper sft --checkpoint "$OUT/runs/base" --data "$OUT/corpus/chat/chat_train.jsonl" --save-dir "$OUT/runs/sft" \
  --max-steps 80 --batch-size 8 --seq-len 256 --lr 5e-4 --warmup-steps 8 --eval-steps 40 training.eval_max_batches=8

echo "== 9. DPO on preference pairs built from the same docstrings (reference log-probs precomputed)"
temper dpo --checkpoint "$OUT/runs/sft" --data "$OUT/corpus/chat/preference_train.jsonl" --save-dir "$OUT/runs/dpo" \
  --max-steps 30 --batch-size 8 --seq-len 256 --lr 5e-5 --beta 0.1 --precompute-ref --eval-steps 15 \
  training.eval_max_batches=4

echo "== 10. chat with the tuned model: generation stops at the end-of-turn token"
temper generate --checkpoint "$OUT/runs/dpo" --chat "What does \`json.dumps\` do?" --max-new-tokens 60 --temperature 0

echo "== 11. lm-evaluation-harness on the pretrained model: which sentence really comes next? (local task, offline)"
temper eval --checkpoint "$OUT/runs/base" --lm-eval tempering_next_sentence --batch-size 16

echo "== 12. plot pretraining and post-training: loss, perplexity (val, val:new, val:original), LR, throughput, memory"
temper plot "$OUT/runs/base" "$OUT/runs/code" --output "$OUT/plot.png"
