#!/usr/bin/env bash
# Session 8, call 2: motion VAEs trained with squared errors (l1_weight=0 mse_weight=1; the run used the option's
# first form, `recon_loss=mse`, the same loss: see each run's summary.json). Call 1 (L1) kept at most one axis in
# every recipe; on this CPU a fresh tiny Wan VAE trained with L1 on dense random images learns one colour channel and
# drops two, with MSE it learns them all (REPORT "Session 8"). 17x64x64, batch 32, CUDA graphs, no dense videos.
#   A: encoder + decoder copied from the RGB vae/, adaptors reset to gain 8
#   B: A + axis_balanced
#   C: a fresh motion VAE of the preset (from_scratch), axis_balanced
#   D: the shipped motion VAE continued, axis_balanced
set -uo pipefail
cd "$(dirname "$0")/../../../.."
MIN=${1:-6.5}
S=train/outputs/s8c2
mkdir -p $S
common=(data.batch_size=32 validation_steps=250 num_validation_clips=8 max_grad_norm=1000 checkpointing_steps=500
        cuda_graphs=true dense_clips=0 l1_weight=0 mse_weight=1)
rgb=(from_scratch=false copy_encoder_from_vae=true copy_decoder_from_vae=true motion_gain=8)
run() {  # run NAME overrides...
  local name=$1; shift
  python train/train_vae.py --config train/configs/tiny_motion_vae.yaml --output-dir $S/$name \
    --export-dir $S/${name}_export --max-minutes "$MIN" --set "${common[@]}" "$@" > $S/$name.log 2>&1
  echo "== $name rc=$?"; tr '\r' '\n' < $S/$name.log | grep -o "step [0-9]* validation.*" | tail -6
  if [ -n "${OUT:-}" ]; then
    tar czf "$OUT/call2_$name.tgz" $S/$name.log $S/$name/{metrics.jsonl,summary.json,config.yaml,curves.png} \
      $S/${name}_export $(ls -d $S/$name/checkpoints/checkpoint-* | sort -t- -k2 -n | tail -1)
  fi
}
run A "${rgb[@]}" &
run B "${rgb[@]}" axis_balanced=true &
run C from_scratch=true axis_balanced=true &
run D from_scratch=false copy_encoder_from_vae=false copy_decoder_from_vae=false motion_gain=null axis_balanced=true &
wait
