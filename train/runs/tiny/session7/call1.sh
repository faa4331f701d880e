#!/usr/bin/env bash
# Session 7, call 1: does 4D-STraG learn the prompt? Two runs side by side from the shipped weights, both on a pool
# of encoded clips (16,384 distinct clips instead of session 6's 3,072 raw ones):
#   A: the text encoder frozen (as shipped), B: the text encoder trained with STraG (train_text_encoder).
# Validation every 500 steps on 32 held-out clips (14 with one direction word) reports motion EPE and the prompt-swap follow rate.
set -uo pipefail
cd "$(dirname "$0")/../../../.."
MIN=${MIN:-8.3}
POOL=${POOL:-16384}
S=train/outputs/s7c1
mkdir -p $S
common=(lr_warmup_steps=50 ema_decay=0.998 validation_steps=500 num_validation_clips=32 val_inference_steps=2
        val_guidance_scale=1.0 data.source=synth_pool data.pool_size=$POOL data.pool_chunk_size=128
        cache_latents=true ${EXTRA:-})
run() {  # run NAME overrides...
  local name=$1; shift
  python train/train_strag.py --config train/configs/tiny_strag.yaml --output-dir $S/$name --export-dir $S/${name}_export \
    --max-minutes "$MIN" --set "${common[@]}" "$@" > $S/$name.log 2>&1
  echo "$name rc=$?"; grep -ho "synth pool.*" $S/$name.log | tr '\r' '\n' | tail -1
  grep -ho "step [0-9]* validation.*" $S/$name.log | tail -6; tail -2 $S/$name.log
}
run A train_text_encoder=false &
run B train_text_encoder=true &
wait
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/call1_records.tgz" $S/*.log $S/*/{metrics.jsonl,summary.json,config.yaml,curves.png,samples} \
    $S/*_export/*/config.json $S/*_export/strag/*/config.json
  for n in A B; do
    cp $S/${n}_export/strag/transformer/diffusion_pytorch_model.safetensors "$OUT/${n}_transformer.safetensors"
    cp $S/${n}_export/strag/motion_encoder/diffusion_pytorch_model.safetensors "$OUT/${n}_motion_encoder.safetensors"
  done
  cp $S/B_export/text_encoder/diffusion_pytorch_model.safetensors "$OUT/B_text_encoder.safetensors"
fi
