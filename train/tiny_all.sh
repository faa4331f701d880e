#!/usr/bin/env bash
# Train the embedded default (`tiny` preset) on one GPU, in stages that each fit a ~10-minute slot:
#
#   init    fill $WEIGHTS if it holds none: a copy of the shipped weights, else random ones (every stage starts
#           from $WEIGHTS and exports into it)
#   stage1  depth || RGB VAE                (in parallel on the GPU)        $STAGE1_MIN minutes
#   vae     RGB VAE alone (ViSM's VAE)                                      $STAGE1_MIN minutes
#   text    the text encoder on captions alone (before STraG and ViSM, which keep it frozen)  $STAGE1_MIN minutes
#   stage2  motion VAE: from scratch with L1, continued with squared errors (which keep x and y motion), then
#           its decoder alone with L1 at 128x128 (static tracks near zero; CUDA-graphed steps on a GPU)
#                                                                         3 x $STAGE2_MIN minutes
#   stage3  4D-STraG || 4D-ViSM (need motion_vae/, vae/)                      $STAGE3_MIN minutes
#   strag   4D-STraG alone (after a motion VAE change: its latents are STraG's targets)  $STAGE3_MIN minutes
#   check   size of $WEIGHTS (<= 32 MB) and a load test of the tiny preset
#   all     every step above in order (default)
#
#   train/tiny_all.sh                      # everything (about 6 + 12 + 9 minutes + start-up)
#   STAGE3_MIN=9 train/tiny_all.sh stage3  # one more slot of STraG || ViSM: each run resumes from its checkpoint
#
# Every run exports fp16 weights into $WEIGHTS at each clean exit (complete or out of time) and writes its record
# (config, command, card, steps, wall time, final metrics, curves, last samples) into $RECORDS/<model>/.
# Re-running a stage resumes; a stage's summary.json says "complete": true once it reached max_steps.
# If $OUT is set (a folder that collects results, e.g. on a remote GPU machine), weights and records are copied
# there after each stage.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
SHIPPED=assets/weights/tiny
WEIGHTS=${WEIGHTS:-$SHIPPED}  # where the tracked tree is re-synced between commands use an ignored folder (train/outputs/export)
RUNS=${RUNS:-train/outputs/tiny}
RECORDS=${RECORDS:-$RUNS/records}  # the small, readable files of each run (ignored by git)
STAGE1_MIN=${STAGE1_MIN:-6}
STAGE2_MIN=${STAGE2_MIN:-4}
STAGE3_MIN=${STAGE3_MIN:-9}
MAX_MB=32

train() {  # train NAME SCRIPT CONFIG MINUTES [KEY=VALUE ...] (extra config overrides)
  local name=$1 script=$2 config=$3 minutes=$4
  mkdir -p "$RUNS/$name"
  echo "== $name: $script --config $config (budget $minutes min)"
  $PY "train/$script" --config "train/configs/$config" --output-dir "$RUNS/$name" --export-dir "$WEIGHTS" \
    --set init_from="$WEIGHTS" "${@:5}" --max-minutes "$minutes" > "$RUNS/$name/stdout.log" 2>&1 || { echo "!! $name failed:"; tail -30 "$RUNS/$name/stdout.log"; return 1; }
  tail -1 "$RUNS/$name/stdout.log"
  record "$name"
}

record() {  # copy the small, readable files of a run into $RECORDS/<name>/
  local name=$1 src="$RUNS/$1" dst="$RECORDS/$1"
  mkdir -p "$dst"
  cp "$src"/{config.yaml,summary.json,runs.jsonl,metrics.jsonl,curves.png} "$dst"/ 2>/dev/null || true
  local last
  last=$(ls "$src"/samples/*.png 2>/dev/null | sort | tail -1 || true)
  [ -n "$last" ] && cp "$last" "$dst/samples_last.png"
  if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT/$RECORDS" "$OUT/$WEIGHTS"
    cp -r "$dst" "$OUT/$RECORDS/"
    cp -r "$WEIGHTS"/. "$OUT/$WEIGHTS/"
  fi
}

parallel() {  # run two `train` calls at once on the GPU; fail if either fails
  ( train "${@:1:4}" ) & local a=$!
  ( train "${@:5:4}" ) & local b=$!
  local rc=0
  wait $a || rc=1
  wait $b || rc=1
  return $rc
}

step_init() {  # every stage starts from $WEIGHTS: a copy of the shipped weights, or random ones if none exist
  if [ ! -f "$WEIGHTS/strag/transformer/config.json" ]; then
    if [ -f "$SHIPPED/strag/transformer/config.json" ] && [ "$WEIGHTS" != "$SHIPPED" ]; then
      echo "== init: copy $SHIPPED -> $WEIGHTS"
      mkdir -p "$WEIGHTS" && cp -r "$SHIPPED"/. "$WEIGHTS"/
    else
      echo "== init: random tiny weights -> $WEIGHTS"
      $PY -m more4d.weights.presets "$WEIGHTS"
    fi
  fi
}

step_check() {
  local bytes
  bytes=$(du -sb "$WEIGHTS" | cut -f1)
  echo "== $WEIGHTS: $(( bytes / 1024 / 1024 )) MiB ($bytes bytes; limit $MAX_MB MB)"
  if [ "$bytes" -gt $(( MAX_MB * 1000 * 1000 )) ]; then echo "!! over the $MAX_MB MB budget"; return 1; fi
  $PY -c "from more4d.weights import load_components; c = load_components('tiny', '$WEIGHTS'); print('loads:', sorted(c))"
  grep -h '"complete"' "$RECORDS"/*/summary.json 2>/dev/null | sort | uniq -c || true
}

stage1() { parallel depth train_depth.py tiny_depth.yaml "$STAGE1_MIN" vae train_vae.py tiny_vae_rgb.yaml "$STAGE1_MIN"; }
vae() { train vae train_vae.py tiny_vae_rgb.yaml "$STAGE1_MIN"; }
text() { train text_encoder train_text_encoder.py tiny_text_encoder.yaml "$STAGE1_MIN"; }
stage2() {
  local gpu
  gpu=$($PY -c "import torch; print(str(torch.cuda.is_available()).lower())")
  train motion_vae train_vae.py tiny_motion_vae.yaml "$STAGE2_MIN" cuda_graphs="$gpu"
  # squared errors: with L1 alone a tiny Wan VAE keeps one motion axis; checkpoints/best survives a late loss spike
  train motion_vae_mse train_vae.py tiny_motion_vae.yaml "$STAGE2_MIN" cuda_graphs="$gpu" from_scratch=false \
    copy_encoder_from_vae=false copy_decoder_from_vae=false motion_gain=null dense_clips=0 axis_balanced=true \
    l1_weight=0 mse_weight=1 data.batch_size=32 validation_steps=200 best_metric=val/epe_m
  # the decoder alone (the latents, hence STraG's targets, stay), L1 with every track weighed alike: static tracks
  # near zero
  train motion_vae_decoder train_vae.py tiny_motion_vae.yaml "$STAGE2_MIN" cuda_graphs="$gpu" from_scratch=false \
    train_encoder=false train_encoder_adaptor=false copy_encoder_from_vae=false copy_decoder_from_vae=false \
    motion_gain=null dense_clips=0 axis_balanced=true l1_weight=1 mse_weight=0 moving_weight=1 learning_rate=2e-4 \
    data.height=128 data.width=128 data.batch_size=8 data.pool_size=1024 validation_steps=200 best_metric=val/epe_m
}
stage3() { parallel strag train_strag.py tiny_strag.yaml "$STAGE3_MIN" vism train_vism.py tiny_vism.yaml "$STAGE3_MIN"; }
strag() { train strag train_strag.py tiny_strag.yaml "$STAGE3_MIN"; }

steps=("${@:-all}")
[ "${steps[0]}" = all ] && steps=(init stage1 text stage2 stage3 check)
for s in "${steps[@]}"; do
  case $s in
    init) step_init ;;
    stage1|vae|text|stage2|stage3|strag) step_init; $s ;;
    check) step_check ;;
    *) echo "unknown step $s (init | stage1 | vae | text | stage2 | stage3 | strag | check | all)"; exit 2 ;;
  esac
done
