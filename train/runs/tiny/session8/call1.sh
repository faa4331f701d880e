#!/usr/bin/env bash
# Session 8, call 1: four motion-VAE recipes side by side on one GPU (17x64x64, batch 32, CUDA graphs), watching
# val/moving_rel_{x,y,z} (1 = that axis is decoded as no motion; the shipped motion VAE: x 1.01, y 1.02, z 0.10).
#   A: encoder + decoder copied from the RGB vae/ (learned x on the CPU in session 7), adaptors reset to gain 8,
#      no dense videos (their incompressible noise dominated the shipped recipe's loss: dense L1 0.20 vs 0.015)
#   B: A + axis_balanced (each axis an equal share of the loss)
#   C: B + 8 dense videos per step (the shipped recipe's regulariser)
#   D: the shipped motion VAE continued with B's loss (no dense videos, axis-balanced)
set -uo pipefail
cd "$(dirname "$0")/../../../.."
MIN=${1:-7.5}
S=train/outputs/s8c1
mkdir -p $S
common=(from_scratch=false data.batch_size=32 validation_steps=250 num_validation_clips=8 max_grad_norm=1000
        checkpointing_steps=500 cuda_graphs=true dense_clips=0)
rgb=(copy_encoder_from_vae=true copy_decoder_from_vae=true motion_gain=8)
run() {  # run NAME overrides...
  local name=$1; shift
  python train/train_vae.py --config train/configs/tiny_motion_vae.yaml --output-dir $S/$name \
    --export-dir $S/${name}_export --max-minutes "$MIN" --set "${common[@]}" "$@" > $S/$name.log 2>&1
  echo "$name rc=$?"; tr '\r' '\n' < $S/$name.log | grep -o "step [0-9]* validation.*" | tail -6
}
run A "${rgb[@]}" &
run B "${rgb[@]}" axis_balanced=true &
run C "${rgb[@]}" axis_balanced=true dense_clips=8 &
run D copy_encoder_from_vae=false copy_decoder_from_vae=false motion_gain=null axis_balanced=true &
wait
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/call1.tgz" $S/*.log $S/*/metrics.jsonl $S/*/summary.json $S/*/config.yaml $S/*/curves.png \
    $S/*/samples $S/*_export $(for d in $S/*/checkpoints; do ls -d $d/checkpoint-* | sort -t- -k2 -n | tail -1; done)
fi
