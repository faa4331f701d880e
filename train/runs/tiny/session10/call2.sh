#!/usr/bin/env bash
# Session 10, device call 2: 4D-STraG alone (call 1's S built its pool for 6 of its 6.3 minutes beside two VAE jobs),
# conditions encoded by the RGB vae/, from the shipped STraG, with call 1's V2 decoder in assets/weights/tiny.
set -euo pipefail
cd "$(dirname "$0")/../../../.."
MIN=${1:-7.8}
S=train/outputs/s10
mkdir -p $S
python train/train_strag.py --config train/configs/tiny_strag.yaml --output-dir $S/S --export-dir $S/S_export \
  --max-minutes "$MIN" --set init_from=assets/weights/tiny lr_warmup_steps=100 validation_steps=500 \
  data.pool_size=8192 best_metric=val/motion_epe_ratio ${EXTRA:-} > $S/S.log 2>&1
tr '\r' '\n' < $S/S.log | grep -o "synth pool: 100.*\|step [0-9]* validation.*\|best .*" | tail -14
[ -n "${OUT:-}" ] && tar czf "$OUT/s10_S2.tgz" $S/S.log $S/S/{metrics.jsonl,summary.json,config.yaml,curves.png} \
  $S/S/samples $S/S_export
state=$S/S/checkpoints/best/train_state.json
python train/train_strag.py --config train/configs/tiny_strag.yaml --output-dir $S/S --export-dir $S/S_best \
  --resume $S/S/checkpoints/best --max-steps "$(python -c "import json; print(json.load(open('$state'))['step'])")" \
  --set init_from=assets/weights/tiny data.pool_size=256 best_metric=val/motion_epe_ratio > $S/S_best.log 2>&1
tail -c 300 $S/S_best.log
[ -n "${OUT:-}" ] && tar czf "$OUT/s10_S2_best.tgz" $S/S_best $S/S_best.log && ls -la "$OUT"
