#!/usr/bin/env bash
# Session 6, call 3: 4D-STraG on the new motion VAE (call 2's X): the shipped weights with motion_vae/ replaced,
# STraG fine-tuned from the shipped one on a synth pool with cached latents (its targets changed, so it must be).
set -uo pipefail
cd "$(dirname "$0")/../../../.."
MIN=${1:-8}
S=train/outputs/s6c3
W=train/outputs/export
mkdir -p $S && rm -rf $W && cp -r assets/weights/tiny $W && rm -rf $W/motion_vae && cp -r train/outputs/s6c2/X_export/motion_vae $W/
python train/train_strag.py --config train/configs/tiny_strag.yaml --output-dir $S/strag --export-dir $S/export \
  --max-minutes "$MIN" --set init_from=$W lr_warmup_steps=50 validation_steps=100000 data.source=synth_pool \
  data.pool_size=3072 cache_latents=true > $S/strag.log 2>&1
echo "rc=$?"; grep -ho "step [0-9]* validation.*" $S/strag.log | tail -3; tail -2 $S/strag.log
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/call3_records.tgz" $S/strag.log $S/strag/{metrics.jsonl,summary.json,config.yaml,curves.png,samples} \
    $S/export/strag/*/config.json
  cp $S/export/strag/transformer/diffusion_pytorch_model.safetensors "$OUT/transformer.safetensors"
  cp $S/export/strag/motion_encoder/diffusion_pytorch_model.safetensors "$OUT/motion_encoder.safetensors"
fi
