#!/usr/bin/env bash
# Session 5, call 1: five motion-VAE recipes side by side on one GPU (each its own process), from
# train/outputs/mv_init (= the shipped vae/ + motion_vae/, vae/ replaced by session 4's best RGB VAE, e1).
# Run on the device as: bash train/runs/tiny/session5/call1_motion_vae_sweep.sh MINUTES
set -uo pipefail
cd "$(dirname "$0")/../../../.."
MIN=${1:-7}
S=train/outputs/s5
mkdir -p $S
run() {  # run NAME overrides...
  local name=$1; shift
  python train/train_vae.py --config train/configs/tiny_motion_vae.yaml --output-dir $S/$name --export-dir $S/${name}_export \
    --max-minutes "$MIN" --set init_from=train/outputs/mv_init lr_warmup_steps=50 "$@" > $S/$name.log 2>&1
  echo "$name rc=$?"; grep validation $S/$name.log | tail -2
}
run a train_encoder=true learning_rate=3e-4 moving_weight=4 motion_gain=8 &
run b train_encoder=true learning_rate=1e-3 moving_weight=8 motion_gain=8 &
run c train_encoder=true learning_rate=1e-3 moving_weight=8 motion_gain=4 &
run d train_encoder=false learning_rate=1e-3 moving_weight=8 motion_gain=8 &
run e train_encoder=true learning_rate=1e-3 moving_weight=16 motion_gain=8 &
wait
nvidia-smi --query-gpu=name,memory.used --format=csv
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/call1.tgz" $S/*.log $S/*/metrics.jsonl $S/*/summary.json $S/*/config.yaml $S/*/curves.png $S/*_export
fi
