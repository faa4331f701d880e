#!/usr/bin/env bash
# Session 7, CPU, second try at x/y in the motion VAE (cpu_vae_axes.sh left them at ~1): side by side, one thread
# each, batch 2 + 4 dense videos at 17x64x64, validation every 200 steps:
#   dense_led: the shipped motion VAE, no moving/depth weighting (the dense videos' plain L1 weighs relatively more);
#   from_rgb_vae: encoder and decoder copied from the shipped RGB `vae/` (which reconstructs every colour channel),
#                 adaptors reset to tanh(8 m / 2).
set -uo pipefail
cd "$(dirname "$0")/../../../.."
MIN=${MIN:-25}
S=${S:-train/outputs/s7vae2}
mkdir -p $S
common=(from_scratch=false data.batch_size=2 dense_clips=4 data.pool_size=512 validation_steps=200
        num_validation_clips=8 use_ema=false lr_warmup_steps=20 checkpointing_steps=100000 ${EXTRA:-})
run() {  # run NAME overrides...
  local name=$1; shift
  OMP_NUM_THREADS=1 python train/train_vae.py --config train/configs/tiny_motion_vae.yaml --output-dir $S/$name \
    --max-minutes "$MIN" --set "${common[@]}" "$@" > $S/$name.log 2>&1
  echo "$name rc=$?"; tr '\r' '\n' < $S/$name.log | grep -o "step [0-9]* validation.*" | tail -12
}
run dense_led motion_gain=null moving_weight=1 depth_weighted=false &
run from_rgb_vae copy_encoder_from_vae=true copy_decoder_from_vae=true motion_gain=8 &
wait
