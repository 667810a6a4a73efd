#!/usr/bin/env bash
# The end-to-end demo on the built-in sample corpus: corpus -> tokenizer -> shards.
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
