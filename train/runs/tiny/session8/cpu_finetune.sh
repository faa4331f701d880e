#!/usr/bin/env bash
# Session 8, CPU: call 4's E (pure MSE: x 0.28, y 0.25, z 0.25, static tracks 0.059 m) fine-tuned from its exported
# weights with a fresh optimiser (call 3 switched the loss of a resumed run and its Adam state wrecked all axes for
# ~300 steps). Side by side, one thread each, batch 2 at 17x64x64:
#   l1mse: l1_weight 1 + mse_weight 16 (win back static precision, keep the axes?)
#   mse:   pure MSE continued (control)
set -uo pipefail
cd "$(dirname "$0")/../../../.."
MIN=${MIN:-30}
S=${S:-train/outputs/s8cpu}
mkdir -p $S
common=(init_from=train/outputs/s8c4/E_export from_scratch=false copy_encoder_from_vae=false copy_decoder_from_vae=false
        motion_gain=null axis_balanced=true dense_clips=0 data.batch_size=2 data.pool_size=512 validation_steps=150
        num_validation_clips=8 num_stat_clips=16 lr_warmup_steps=50 checkpointing_steps=100000)
run() {  # run NAME overrides...
  local name=$1; shift
  OMP_NUM_THREADS=1 python train/train_vae.py --config train/configs/tiny_motion_vae.yaml --output-dir $S/$name \
    --export-dir $S/${name}_export --max-minutes "$MIN" --set "${common[@]}" "$@" > $S/$name.log 2>&1
  echo "$name rc=$?"; tr '\r' '\n' < $S/$name.log | grep -o "step [0-9]* validation.*" | tail -12
}
run l1mse l1_weight=1 mse_weight=16 &
run mse l1_weight=0 mse_weight=1 &
wait
