#!/usr/bin/env bash
# Session 6, call 2: the CUDA-graph benchmark again (call 1's capture failed on a host-to-device copy of the latent
# statistics, since cached), then two continuations of call 1's motion VAEs with CUDA graphs, side by side:
# X = C (no clipping) at 17x64x64, batch 32 + 8 dense; Y = A at 17x128x128, batch 16 + 4 dense, no clipping.
set -uo pipefail
cd "$(dirname "$0")/../../../.."
MIN=${1:-7.5}
S=train/outputs/s6c2
P=train/outputs/s6c1
mkdir -p $S
python bench/bench_vae_step.py --batch-size 16 --size 17x64x64 2>&1 | tee $S/bench_vae_step.log
python bench/bench_vae_step.py --batch-size 32 --dense-clips 8 --size 17x64x64 2>&1 | tail -3 | tee -a $S/bench_vae_step.log
run() {  # run NAME RESUME overrides...
  local name=$1 resume=$2; shift 2
  local cmd=(python train/train_vae.py --config train/configs/tiny_motion_vae.yaml --output-dir $S/$name
             --export-dir $S/${name}_export --max-minutes "$MIN" --resume "$resume" --set "$@")
  "${cmd[@]}" cuda_graphs=true > $S/$name.log 2>&1 || { echo "$name: graphed run failed, eager"; tail -5 $S/$name.log;
    rm -rf $S/$name; "${cmd[@]}" > $S/$name.eager.log 2>&1; }
  echo "$name rc=$?"; grep -ho "step [0-9]* validation.*" $S/$name*.log | tail -8
}
run X $(ls -d $P/C/checkpoints/checkpoint-* | tail -1) validation_steps=500 max_grad_norm=1000 data.batch_size=32 dense_clips=8 &
run Y $(ls -d $P/A/checkpoints/checkpoint-* | tail -1) validation_steps=500 max_grad_norm=1000 data.height=128 data.width=128 &
wait
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/call2.tgz" $S/*.log $S/*/metrics.jsonl $S/*/summary.json $S/*/config.yaml $S/*/curves.png \
    $S/*_export $S/*/checkpoints
fi
