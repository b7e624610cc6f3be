#!/usr/bin/env bash
# The ablation matrix on one GPU in at most 8 minutes: every row of `t2i_nb.ablation.ROWS`, both built-in sets,
# 3 seeds, at 64 px (the CPU study's 32 px doubled), in SHARDS processes that share the GPU and the study folder
# (`t2i_ablation --shard i/n`; shared encoders are pre-trained once, the other shards wait for them). Each shard stops
# at LIMIT seconds: what finished is kept, and the report marks the rest as missing; run it again to continue.
# Writes runs/study-gpu/ (the study folder) and nbs/results/study-gpu.json (the same format as the CPU study).
#
#   bash tools/gpu_study.sh                            # on a GPU machine, with the package installed
#   STEPS=2000 SHARDS=12 LIMIT=420 bash tools/gpu_study.sh
#   GPU_STUDY_SMOKE=1 bash tools/gpu_study.sh          # the same plumbing on a CPU in a few minutes (2 rows, tiny budget)
#
# NOT YET RUN ON A GPU: no GPU has been lent to the sessions that wrote it. STEPS and SHARDS are first guesses (a
# 64 px cpu-quick step is tens of milliseconds on an H100/H200, so 1,000 steps are under a minute per run, and 102
# runs fit 8 minutes only when about 12 run at once); measure, then set them.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/study-gpu}; RESULTS=${RESULTS:-nbs/results/study-gpu.json}
SHARDS=${SHARDS:-12}; LIMIT=${LIMIT:-420}; STEPS=${STEPS:-1000}
ARGS=(--out "$OUT" --device cuda --img_size 64 --steps "$STEPS" --pretrain_epochs 30 --eval_samples 1000)
if [ "${GPU_STUDY_SMOKE:-0}" = 1 ]; then
  SHARDS=2; ARGS=(--out "$OUT" --device cpu --rows dfgan,dte --datasets shapes --seeds 0,1 --steps 2 --pretrain_epochs 1 --eval_samples 8)
fi
mkdir -p "$OUT"
export OMP_NUM_THREADS=1
for i in $(seq 1 "$SHARDS"); do
  timeout "$LIMIT" t2i_ablation "${ARGS[@]}" --shard "$i/$SHARDS" > "$OUT/shard$i.log" 2>&1 &
done
wait
t2i_ablation "${ARGS[@]}" --report --results "$RESULTS" | tail -n 3
