#!/usr/bin/env bash
# Session 6, call 1: (1) bench/bench_vae_step.py, eager against CUDA-graphed; (2) three motion VAEs from scratch
# (tiny_motion_vae.yaml: scale norms, dense mix, synth pool) side by side with CUDA graphs: A = the config as is
# (batch 16), B = batch 32 + 8 dense clips, C = no gradient clipping. A run whose graph capture fails reruns eager.
set -uo pipefail
cd "$(dirname "$0")/../../../.."
MIN=${1:-6.5}
S=train/outputs/s6c1
mkdir -p $S
python bench/bench_vae_step.py --batch-size 16 --size 17x64x64 2>&1 | tee $S/bench_vae_step.log
run() {  # run NAME overrides...
  local name=$1; shift
  local cmd=(python train/train_vae.py --config train/configs/tiny_motion_vae.yaml --output-dir $S/$name
             --export-dir $S/${name}_export --max-minutes "$MIN" --set "$@")
  "${cmd[@]}" cuda_graphs=true > $S/$name.log 2>&1 || { echo "$name: graphed run failed, eager"; tail -5 $S/$name.log;
    rm -rf $S/$name; "${cmd[@]}" > $S/$name.eager.log 2>&1; }
  echo "$name rc=$?"; grep -ho "step [0-9]* validation.*" $S/$name*.log | tail -6
}
run A validation_steps=1000 &
run B validation_steps=1000 data.batch_size=32 dense_clips=8 &
run C validation_steps=1000 max_grad_norm=1000 &
wait
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/call1.tgz" $S/*.log $S/*/metrics.jsonl $S/*/summary.json $S/*/config.yaml $S/*/curves.png \
    $S/*_export $S/*/checkpoints
fi
