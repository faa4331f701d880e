#!/usr/bin/env bash
# Session 10, device call 3: continue both of call 2's candidates side by side from assets/weights/tiny, which holds
# call 2's best STraG (S2) and call 1's V2 decoder:
#   S3  4D-STraG, lr 2e-4, a new 8,192-clip pool (seed 11)
#   V3  the motion VAE decoder (encoder frozen), L1, moving_weight 1, 128x128, as V2
set -euo pipefail
cd "$(dirname "$0")/../../../.."
MIN=${1:-7.0}
S=train/outputs/s10
mkdir -p $S
DEC="init_from=assets/weights/tiny from_scratch=false train_encoder=false train_encoder_adaptor=false \
  copy_encoder_from_vae=false copy_decoder_from_vae=false motion_gain=null dense_clips=0 axis_balanced=true \
  l1_weight=1 mse_weight=0 learning_rate=2e-4 lr_warmup_steps=50 cuda_graphs=true validation_steps=200 \
  num_validation_clips=16 checkpointing_steps=400 best_metric=val/epe_m moving_weight=1 data.height=128 \
  data.width=128 seed=11"
STRAG="init_from=assets/weights/tiny lr_warmup_steps=50 learning_rate=2e-4 validation_steps=500 \
  best_metric=val/motion_epe_ratio seed=11"
python train/train_strag.py --config train/configs/tiny_strag.yaml --output-dir $S/S3 --export-dir $S/S3_export \
  --max-minutes "$MIN" --set $STRAG data.pool_size=8192 > $S/S3.log 2>&1 &
python train/train_vae.py --config train/configs/tiny_motion_vae.yaml --output-dir $S/V3 --export-dir $S/V3_export \
  --max-minutes "$MIN" --set $DEC data.batch_size=8 data.pool_size=1024 > $S/V3.log 2>&1 &
wait
for r in S3 V3; do
  echo "== $r"; tr '\r' '\n' < $S/$r.log | grep -o "synth pool: 100.*\|step [0-9]* validation.*\|best .*" | tail -10
  [ -n "${OUT:-}" ] && tar czf "$OUT/s10_$r.tgz" $S/$r.log $S/$r/{metrics.jsonl,summary.json,config.yaml,curves.png} \
    $S/${r}_export
done
best() {  # script config run overrides: export the run's best checkpoint (no training step)
  local state=$S/$3/checkpoints/best/train_state.json
  python train/$1 --config train/configs/$2 --output-dir $S/$3 --export-dir $S/${3}_best --resume $S/$3/checkpoints/best \
    --max-steps "$(python -c "import json; print(json.load(open('$state'))['step'])")" --set $4 > $S/${3}_best.log 2>&1
  [ -n "${OUT:-}" ] && tar czf "$OUT/s10_${3}_best.tgz" $S/${3}_best $S/${3}_best.log
}
best train_strag.py tiny_strag.yaml S3 "$STRAG data.pool_size=256" &
best train_vae.py tiny_motion_vae.yaml V3 "$DEC data.pool_size=64" &
wait
[ -n "${OUT:-}" ] && ls -la "$OUT"
