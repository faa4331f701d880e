#!/usr/bin/env bash
# Session 10, device call 1: three jobs on one GPU, side by side, all from the shipped weights.
#   S   4D-STraG retrained with its conditions encoded by the RGB vae/ (the motion VAE loses colours)
#   V1  motion VAE decoder (encoder frozen: latents, hence STraG, stay valid), L1, moving_weight 4, 64x64
#   V2  the same with moving_weight 1 at 128x128 (static tracks weigh as much as in the metric)
# MIN minutes each. With $OUT set, records and weights are packed there.
set -euo pipefail
cd "$(dirname "$0")/../../../.."
MIN=${1:-6.5}
S=train/outputs/s10
mkdir -p $S
DEC="init_from=assets/weights/tiny from_scratch=false train_encoder=false train_encoder_adaptor=false \
  copy_encoder_from_vae=false copy_decoder_from_vae=false motion_gain=null dense_clips=0 axis_balanced=true \
  l1_weight=1 mse_weight=0 learning_rate=2e-4 lr_warmup_steps=50 cuda_graphs=true validation_steps=200 \
  num_validation_clips=16 checkpointing_steps=400 best_metric=val/epe_m"
python train/train_strag.py --config train/configs/tiny_strag.yaml --output-dir $S/S --export-dir $S/S_export \
  --max-minutes "$MIN" --set init_from=assets/weights/tiny lr_warmup_steps=100 validation_steps=500 \
  data.pool_size=12288 best_metric=val/motion_epe_ratio best_mode=min > $S/S.log 2>&1 &
python train/train_vae.py --config train/configs/tiny_motion_vae.yaml --output-dir $S/V1 --export-dir $S/V1_export \
  --max-minutes "$MIN" --set $DEC moving_weight=4 data.batch_size=32 data.pool_size=2048 > $S/V1.log 2>&1 &
python train/train_vae.py --config train/configs/tiny_motion_vae.yaml --output-dir $S/V2 --export-dir $S/V2_export \
  --max-minutes "$MIN" --set $DEC moving_weight=1 data.batch_size=8 data.pool_size=1024 data.height=128 \
  data.width=128 > $S/V2.log 2>&1 &
wait
for r in S V1 V2; do
  echo "== $r"; tr '\r' '\n' < $S/$r.log | grep -o "synth pool.*\|step [0-9]* validation.*\|best .*" | tail -12
done
pack() {  # tarball name, paths
  [ -n "${OUT:-}" ] && tar czf "$OUT/$1.tgz" "${@:2}" 2>/dev/null || true
}
for r in S V1 V2; do
  pack s10_$r $S/$r.log $S/$r/{metrics.jsonl,summary.json,config.yaml,curves.png} $S/${r}_export
done
# then export each run's best checkpoint (no training step; it rewrites the run's summary.json, packed above)
best() {  # script config run overrides
  local state=$S/$3/checkpoints/best/train_state.json
  [ -f $state ] || return 0
  python train/$1 --config train/configs/$2 --output-dir $S/$3 --export-dir $S/${3}_best \
    --resume $S/$3/checkpoints/best --max-steps "$(python -c "import json; print(json.load(open('$state'))['step'])")" \
    --set $4 > $S/${3}_best.log 2>&1 || tail -5 $S/${3}_best.log
}
best train_strag.py tiny_strag.yaml S "init_from=assets/weights/tiny data.pool_size=256 best_metric=val/motion_epe_ratio" &
best train_vae.py tiny_motion_vae.yaml V1 "$DEC moving_weight=4" &
best train_vae.py tiny_motion_vae.yaml V2 "$DEC moving_weight=1 data.height=128 data.width=128" &
wait
for r in S V1 V2; do pack s10_${r}_best $S/${r}_best $S/${r}_best.log; done
[ -n "${OUT:-}" ] && ls -la "$OUT"
