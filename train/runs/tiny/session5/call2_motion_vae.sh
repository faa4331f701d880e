#!/usr/bin/env bash
# Session 5, call 2: three motion-VAE recipes side by side, all fp32 (mixed_precision=no), encoder trained,
# moving_weight 16; from train/outputs/mv_init (shipped vae/ + motion_vae/, vae/ = session 4's e1).
set -uo pipefail
cd "$(dirname "$0")/../../../.."
MIN=${1:-8.5}
S=train/outputs/s5
mkdir -p $S
run() {  # run NAME overrides...
  local name=$1; shift
  python train/train_vae.py --config train/configs/tiny_motion_vae.yaml --output-dir $S/$name --export-dir $S/${name}_export \
    --max-minutes "$MIN" --set init_from=train/outputs/mv_init lr_warmup_steps=50 train_encoder=true motion_gain=8 \
    moving_weight=16 mixed_precision=no validation_steps=200 "$@" > $S/$name.log 2>&1
  echo "$name rc=$?"; grep -o "step [0-9]* validation.*" $S/$name.log | tail -3
}
run f learning_rate=5e-4 data.height=64 data.width=64 data.batch_size=32 &
run g learning_rate=1e-3 data.height=64 data.width=64 data.batch_size=32 &
run h learning_rate=5e-4 &
wait
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/call2.tgz" $S/*.log $S/*/metrics.jsonl $S/*/summary.json $S/*/config.yaml $S/*/curves.png $S/*_export
fi
