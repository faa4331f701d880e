#!/usr/bin/env bash
# Session 7, CPU: does the pooled caption path let 4D-STraG learn the prompt? Two runs side by side from the shipped
# weights at 32x32 (one thread each, 2,048-clip encoded pool, batch 32, raw weights validated every 250 steps on
# the 32 validation clips, 14 of which name one direction): base (as shipped) and pooled (pooled_text=true).
set -uo pipefail
cd "$(dirname "$0")/../../../.."
MIN=${MIN:-16}
S=${S:-train/outputs/s7cpu}
mkdir -p $S
common=(mixed_precision=no data.height=32 data.width=32 data.batch_size=32 data.pool_size=${POOL:-2048}
        data.pool_chunk_size=64 validation_steps=250 use_ema=false lr_warmup_steps=50 checkpointing_steps=100000
        ${EXTRA:-})
run() {  # run NAME overrides...
  local name=$1; shift
  OMP_NUM_THREADS=1 python train/train_strag.py --config train/configs/tiny_strag.yaml --output-dir $S/$name \
    --max-minutes "$MIN" --set "${common[@]}" "$@" > $S/$name.log 2>&1
  echo "$name rc=$?"; grep -ho "step [0-9]* validation.*" $S/$name.log | tail -8
}
run base pooled_text=false &
run pooled pooled_text=true &
wait
