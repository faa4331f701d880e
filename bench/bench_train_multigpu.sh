#!/usr/bin/env bash
# Paper-scale 4D-STraG training on 2..N GPUs: FSDP2 and DeepSpeed ZeRO-3, 14B random init on the meta
# device, 49x368x512 batches, bf16, gradient checkpointing, 12 optimizer steps, checkpoint save + resume check;
# then the same 2-process gloo dry runs of train/train_strag.py as on the CPU, on GPUs (accelerate configs).
#   bench/bench_train_multigpu.sh            # every GPU count from 2 to all visible GPUs (powers of two)
#   GPUS="2 8" STEPS=10 bench/bench_train_multigpu.sh
# pip install -r requirements-multigpu.txt first (deepspeed). Results: bench/train_multigpu.jsonl + table.
set -euo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
PY=${PY:-python}
OUT=${OUT:-bench/train_multigpu.jsonl}
STEPS=${STEPS:-12}
N=$($PY -c "import torch; print(torch.cuda.device_count())")
GPUS=${GPUS:-$(n=2; while [ $n -le "$N" ]; do printf '%s ' $n; n=$((n * 2)); done)}
for g in $GPUS; do
  for engine in fsdp zero3; do
    echo "== $engine on $g GPUs"
    $PY -m torch.distributed.run --nproc-per-node "$g" bench/bench_train_multigpu.py --engine "$engine" \
      --steps "$STEPS" --out "$OUT" || echo "{\"engine\": \"$engine\", \"gpus\": $g, \"failed\": true}" >> "$OUT"
  done
  # ZeRO-3 with CPU offload where the plain engines run out of memory (2 GPUs)
  if [ "$g" -eq 2 ]; then
    $PY -m torch.distributed.run --nproc-per-node 2 bench/bench_train_multigpu.py --engine zero3_offload \
      --steps "$STEPS" --out "$OUT" || echo "{\"engine\": \"zero3_offload\", \"gpus\": 2, \"failed\": true}" >> "$OUT"
  fi
done
$PY - "$OUT" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| engine | GPUs | s/step | tokens/s | clips/s | peak GiB/GPU (max) | save s | resume ok |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    if r.get("failed"):
        print(f"| {r['engine']} | {r['gpus']} | failed (see log) | | | | | |")
        continue
    peak = max((p for p in r["peak_gib_per_gpu"] if p is not None), default=None)
    print(f"| {r['engine']} | {r['gpus']} | {r['step_s']} | {r['tokens_per_s']} | {r['clips_per_s']} | {peak} | "
          f"{r['save_s']} | {r['resume_ok']} |")
PYEOF
