#!/usr/bin/env bash
# English -> Chinese on zh-en (Debian's zh_CN package descriptions: 2,191 training pairs, so a
# demonstration, not a benchmark): a Marian-style unigram vocabulary over both languages, marian-tiny
# from random weights trained with --reverse (each record's English is the input), BLEU on the test
# split with sacreBLEU's zh tokenizer (chosen from the Chinese targets), and a few translations.
#   bash bench/en_zh_demo.sh [MINUTES] [OUT]
set -euo pipefail
MINUTES=${1:-8}
OUT=${2:-runs/en-zh}
PLMKIT=${PLMKIT:-plmkit}
DATA=$(python -c "from plmkit.datasets import fetch; print(fetch('zh-en'))")
[ -f "$OUT-tok/tokenizer.json" ] || $PLMKIT tokenizer train --corpus "$DATA/train.jsonl" --model unigram \
    --vocab-size 4000 --out "$OUT-tok"
$PLMKIT finetune --task translation --reverse --preset marian-tiny --tokenizer "$OUT-tok" \
    --train "$DATA/train.jsonl" --eval "$DATA/dev.jsonl" --epochs 100 --time-budget "${MINUTES}m" --lr 1e-3 --batch-size 16 \
    --eval-samples 100 --no-progress --out "$OUT" --overwrite
$PLMKIT evaluate --model "$OUT/best" --data "$DATA/test.jsonl" --json
head -n 5 "$DATA/test.jsonl" | $PLMKIT predict --model "$OUT/best" --input -
