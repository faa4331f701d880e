#!/usr/bin/env bash
# Session 11, device call 1: 4D-STraG alone from the shipped weights, on the pretrained text encoder that
# assets/weights/tiny/text_encoder holds in the working tree (train_text_encoder.py, run on the CPU); then its best
# checkpoint exported and scored by `more4d eval`'s measurements on 32 held-out clips (2 floor siblings: screening).
#   call1.sh MINUTES RUN SEED [KEY=VALUE ...]   (extra train_strag.py overrides)
set -euo pipefail
cd "$(dirname "$0")/../../../.."
MIN=${1:-6.0}
RUN=${2:-S1}
SEED=${3:-13}
S=train/outputs/s11
mkdir -p $S
STRAG="init_from=assets/weights/tiny lr_warmup_steps=100 learning_rate=3e-4 validation_steps=500 \
  best_metric=val/motion_epe_ratio seed=$SEED ${*:4}"
python train/train_strag.py --config train/configs/tiny_strag.yaml --output-dir $S/$RUN --export-dir $S/${RUN}_export \
  --max-minutes "$MIN" --set $STRAG data.pool_size=8192 > $S/$RUN.log 2>&1
tr '\r' '\n' < $S/$RUN.log | grep -o "synth pool: 100.*\|step [0-9]* validation.*\|best .*" | tail -12
state=$S/$RUN/checkpoints/best/train_state.json
python train/train_strag.py --config train/configs/tiny_strag.yaml --output-dir $S/$RUN --export-dir $S/${RUN}_best \
  --resume $S/$RUN/checkpoints/best --max-steps "$(python -c "import json; print(json.load(open('$state'))['step'])")" \
  --set $STRAG data.pool_size=256 > $S/${RUN}_best.log 2>&1
cp -r assets/weights/tiny $S/cand && rm -rf $S/cand/strag && cp -r $S/${RUN}_best/strag $S/cand/strag
python -c "
import json, sys
from more4d.eval.evaluate import evaluate, format_report
r = evaluate(weights_dir='$S/cand', num_clips=32, device='cuda', floor_samples=2, progress=False)
print(format_report(r)); json.dump(r, open('$S/eval_$RUN.json', 'w'), indent=1)
" 2>&1 | tee $S/eval_$RUN.txt
[ -n "${OUT:-}" ] && tar czf "$OUT/s11_$RUN.tgz" $S/$RUN.log $S/${RUN}_best.log $S/$RUN/{metrics.jsonl,summary.json,config.yaml,curves.png} \
  $S/${RUN}_best/strag $S/eval_$RUN.json $S/eval_$RUN.txt && ls -la "$OUT"
