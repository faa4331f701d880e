#!/usr/bin/env bash
# Session 5, call 3: is the tiny motion VAE's width the limit? Four fresh (random) motion VAEs trained directly on
# motion (encoder too), side by side: C = the tiny preset's Wan VAE (base_dim 8, dim_mult 1,2,2,2), W1 = base 16,
# W2 = base 16 + dim_mult 1,2,4,4, W3 = base 8 + dim_mult 1,2,4,4. Init folders: train/outputs/mvw/<name>/motion_vae.
set -uo pipefail
cd "$(dirname "$0")/../../../.."
MIN=${1:-8.3}
S=train/outputs/s5w
mkdir -p $S
run() {  # run NAME overrides...
  local name=$1; shift
  python train/train_vae.py --config train/configs/tiny_motion_vae.yaml --output-dir $S/$name --export-dir $S/${name}_export \
    --max-minutes "$MIN" --set init_from=train/outputs/mvw/$name copy_encoder_from_vae=false copy_decoder_from_vae=false \
    lr_warmup_steps=50 train_encoder=true motion_gain=8 moving_weight=16 mixed_precision=no validation_steps=200 \
    learning_rate=1e-3 data.height=64 data.width=64 data.batch_size=32 num_stat_clips=32 "$@" > $S/$name.log 2>&1
  echo "$name rc=$?"; grep -o "step [0-9]* validation.*" $S/$name.log | tail -4
}
for n in C W1 W2 W3; do run $n & done
wait
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/call3.tgz" $S/*.log $S/*/metrics.jsonl $S/*/summary.json $S/*/config.yaml $S/*/curves.png $S/*_export
fi
