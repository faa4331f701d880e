#!/usr/bin/env bash
# Ready for the next device session (REPORT "Next session"), one GPU job per call:
#   next.sh vae MIN     continue E (call 4) with pure MSE; exports train/outputs/s9/E_export
#   next.sh strag MIN   4D-STraG (shipped weights) retrained on that motion VAE; exports train/outputs/s9/S_export
# Carry `.whl` and, for `strag`, train/outputs/s9/E_export (what `vae` sent back, unpacked). With $OUT set, each
# step packs its records and weights there. EXTRA="key=value ..." appends config overrides (e.g. a CPU smoke test).
set -euo pipefail
cd "$(dirname "$0")/../../../.."
step=$1 MIN=$2
S=train/outputs/s9
mkdir -p $S
case $step in
  vae)
    python train/train_vae.py --config train/configs/tiny_motion_vae.yaml --output-dir $S/E --export-dir $S/E_export \
      --max-minutes "$MIN" --resume train/runs/tiny/session8/call4_E/checkpoint-1446 \
      --set data.batch_size=32 validation_steps=200 num_validation_clips=8 max_grad_norm=1000 checkpointing_steps=500 \
      cuda_graphs=true dense_clips=0 from_scratch=false copy_encoder_from_vae=false copy_decoder_from_vae=false \
      motion_gain=null axis_balanced=true l1_weight=0 mse_weight=1 ${EXTRA:-} > $S/E.log 2>&1
    tr '\r' '\n' < $S/E.log | grep -o "step [0-9]* validation.*" | tail -8
    if [ -n "${OUT:-}" ]; then
      tar czf "$OUT/s9_E.tgz" $S/E.log $S/E/{metrics.jsonl,summary.json,config.yaml,curves.png} $S/E_export \
        "$(ls -d $S/E/checkpoints/checkpoint-* | sort -t- -k2 -n | tail -1)"
    fi ;;
  strag)
    W=$S/weights  # the shipped weights with the new motion VAE
    rm -rf $W && cp -r assets/weights/tiny $W && cp $S/E_export/motion_vae/* $W/motion_vae/
    python train/train_strag.py --config train/configs/tiny_strag.yaml --output-dir $S/S --export-dir $S/S_export \
      --max-minutes "$MIN" --set init_from=$W lr_warmup_steps=50 ema_decay=0.998 validation_steps=500 \
      num_validation_clips=32 val_inference_steps=2 val_guidance_scale=1.0 data.source=synth_pool \
      data.pool_chunk_size=128 cache_latents=true ${EXTRA:-} > $S/S.log 2>&1
    tr '\r' '\n' < $S/S.log | grep -o "synth pool.*" | tail -1
    tr '\r' '\n' < $S/S.log | grep -o "step [0-9]* validation.*" | tail -8
    if [ -n "${OUT:-}" ]; then
      tar czf "$OUT/s9_S_records.tgz" $S/S.log $S/S/{metrics.jsonl,summary.json,config.yaml,curves.png} \
        $S/S_export/strag/*/config.json
      for part in transformer motion_encoder; do
        cp $S/S_export/strag/$part/diffusion_pytorch_model.safetensors "$OUT/S_$part.safetensors"
      done
    fi ;;
  *) echo "usage: next.sh vae|strag MINUTES"; exit 2 ;;
esac
