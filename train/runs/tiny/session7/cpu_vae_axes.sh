#!/usr/bin/env bash
# Session 7, CPU: the shipped motion VAE decodes x and y motion as zero (val/moving_rel_x, _y ~ 1). Does more
# training bring them in? Two continuations of the shipped weights side by side (one thread each, batch 2 + 2 dense
# videos at 17x64x64, validation every 250 steps): as configured, and without depth weighting.
set -uo pipefail
cd "$(dirname "$0")/../../../.."
MIN=${MIN:-30}
S=${S:-train/outputs/s7vae}
mkdir -p $S
common=(from_scratch=false motion_gain=null data.batch_size=2 dense_clips=2 data.pool_size=512 validation_steps=250
        num_validation_clips=8 use_ema=false lr_warmup_steps=20 checkpointing_steps=100000 ${EXTRA:-})
run() {  # run NAME overrides...
  local name=$1; shift
  OMP_NUM_THREADS=1 python train/train_vae.py --config train/configs/tiny_motion_vae.yaml --output-dir $S/$name \
    --max-minutes "$MIN" --set "${common[@]}" "$@" > $S/$name.log 2>&1
  echo "$name rc=$?"; grep -ho "step [0-9]* validation.*" $S/$name.log | tail -12
}
run as_configured depth_weighted=true &
run no_depth_weight depth_weighted=false &
wait
