#!/usr/bin/env bash
# Session 7, call 3: the last device minutes continue call 1's A (text encoder frozen: the most trained candidate,
# motion EPE ratio 0.986 on validation) alone on the GPU, on 12,288 new clips (seeds 16,384 and up: A's pool held
# 0..16,383), with a cosine decay to the end of the budget. Carried: A's exported transformer + motion encoder.
set -uo pipefail
cd "$(dirname "$0")/../../../.."
MIN=${MIN:-8.3}
POOL=${POOL:-12288}
S=train/outputs/s7c3
W=$S/init
mkdir -p $S && rm -rf $W && cp -r assets/weights/tiny $W
cp train/outputs/s7_A/A_transformer.safetensors $W/strag/transformer/diffusion_pytorch_model.safetensors
cp train/outputs/s7_A/A_motion_encoder.safetensors $W/strag/motion_encoder/diffusion_pytorch_model.safetensors
python train/train_strag.py --config train/configs/tiny_strag.yaml --output-dir $S/D --export-dir $S/D_export \
  --max-minutes "$MIN" --set init_from=$W lr_scheduler=cosine max_steps=${STEPS:-2800} lr_warmup_steps=50 \
  ema_decay=0.998 validation_steps=1000 num_validation_clips=32 val_inference_steps=2 val_guidance_scale=1.0 \
  data.source=synth_pool data.pool_size=$POOL data.pool_chunk_size=128 data.train_seed_start=16384 \
  cache_latents=true ${EXTRA:-} > $S/D.log 2>&1
echo "D rc=$?"; grep -ho "synth pool.*" $S/D.log | tr '\r' '\n' | tail -1
grep -ho "step [0-9]* validation.*" $S/D.log | tail -6; tail -2 $S/D.log
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/call3_records.tgz" $S/D.log $S/D/{metrics.jsonl,summary.json,config.yaml,curves.png,samples} \
    $S/D_export/strag/*/config.json
  for c in transformer motion_encoder; do
    cp $S/D_export/strag/$c/diffusion_pytorch_model.safetensors "$OUT/D_$c.safetensors"
  done
fi
