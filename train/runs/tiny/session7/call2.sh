#!/usr/bin/env bash
# Session 7, call 2: call 1's A (text encoder frozen, 16,384-clip encoded pool) followed no prompt swap after 1,982
# steps, and its B ran out of memory building its pool beside A. Two runs side by side from the shipped weights,
# both training the text encoder, on 8,192-clip pools built 64 clips at a time:
#   B: train_text_encoder, C: the same with latent cells over moving tracks weighted 8x in the flow-matching loss.
set -uo pipefail
cd "$(dirname "$0")/../../../.."
MIN=${MIN:-8.4}
POOL=${POOL:-8192}
S=train/outputs/s7c2
mkdir -p $S
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
common=(lr_warmup_steps=50 ema_decay=0.998 validation_steps=500 num_validation_clips=32 val_inference_steps=2
        val_guidance_scale=1.0 data.source=synth_pool data.pool_size=$POOL data.pool_chunk_size=64
        cache_latents=true train_text_encoder=true ${EXTRA:-})
run() {  # run NAME overrides...
  local name=$1; shift
  python train/train_strag.py --config train/configs/tiny_strag.yaml --output-dir $S/$name --export-dir $S/${name}_export \
    --max-minutes "$MIN" --set "${common[@]}" "$@" > $S/$name.log 2>&1
  echo "$name rc=$?"; grep -ho "synth pool.*" $S/$name.log | tr '\r' '\n' | tail -1
  grep -ho "step [0-9]* validation.*" $S/$name.log | tail -6; tail -2 $S/$name.log
}
run B moving_weight=1 &
run C moving_weight=8 &
wait
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/call2_records.tgz" $S/*.log $S/*/{metrics.jsonl,summary.json,config.yaml,curves.png,samples} \
    $S/*_export/text_encoder/config.json $S/*_export/strag/*/config.json
  for n in B C; do
    for c in strag/transformer strag/motion_encoder text_encoder; do
      cp $S/${n}_export/$c/diffusion_pytorch_model.safetensors "$OUT/${n}_${c//\//_}.safetensors"
    done
  done
fi
