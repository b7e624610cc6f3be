#!/usr/bin/env bash
# The GPU path in one call (at most 8 minutes on one GPU): the `#| cuda` notebook cells, `t2i_bench train` at
# 64/128/256 px in fp32, bf16 and fp16, a few hundred steps of the cub-256 preset's networks on random data, and the
# share of cub-256's training steps spent waiting for data (`t2i_bench data`, full-size photo-like JPEGs).
# Worst case by the timeouts: 120 + 100 + 50 + 3 x 30 + 60 + 60 = 480 s. Every figure goes to $OUT (default gpu_check/): info.json, cuda_cells.log, bench_train_<precision>.json,
# cub256_steps.json, bench_data.json, and summary.txt with one line per check.
#
#   bash tools/gpu_check.sh                 # on a GPU machine, with the package installed (pip install -e .)
#   GPU_CHECK_SMOKE=1 bash tools/gpu_check.sh   # the same plumbing on a CPU in about a minute (tiny sizes)
set -uo pipefail
cd "$(dirname "$0")/.."   # the repository root: nbs/ and tools/ are read from there
OUT=${OUT:-gpu_check}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"; : > "$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }
SMOKE=${GPU_CHECK_SMOKE:-0}
if [ "$SMOKE" = 1 ]; then SIZES=32; STEPS=2; CUB_STEPS=3; CELLS=0; else SIZES=64,128,256; STEPS=10; CUB_STEPS=300; CELLS=1; fi

t2i_info --json_out --no_compile > "$OUT/info.json" 2>&1; note "t2i_info rc=$?"
if [ "$CELLS" = 1 ]; then
  timeout 120 nbdev_test --flags cuda --n_workers 1 --path nbs/08_engine.ipynb > "$OUT/cuda_cells.log" 2>&1; note "cuda cells 08_engine rc=$?"
  timeout 100 nbdev_test --flags cuda --n_workers 1 --path nbs/09_train.ipynb > "$OUT/cuda_cells_09.log" 2>&1; note "cuda cells 09_train rc=$?"
  timeout 50 nbdev_test --flags cuda --n_workers 1 --path nbs/11_generate.ipynb > "$OUT/cuda_cells_11.log" 2>&1; note "cuda cells 11_generate rc=$?"
fi
for p in fp32 bf16 fp16; do
  if [ "$SMOKE" = 1 ] && [ "$p" != fp32 ]; then continue; fi
  timeout 30 t2i_bench train --sizes "$SIZES" --precision "$p" --steps "$STEPS" --out "$OUT/bench_train_$p.json" --json_out > /dev/null 2>> "$OUT/errors.log"
  note "t2i_bench train $p rc=$? -> $OUT/bench_train_$p.json"
done
timeout 60 python tools/gpu_steps.py --steps "$CUB_STEPS" --out "$OUT/cub256_steps.json" $([ "$SMOKE" = 1 ] && echo --smoke) 2>> "$OUT/errors.log"
note "cub-256 networks, $CUB_STEPS steps rc=$? -> $OUT/cub256_steps.json"
if [ "$SMOKE" = 1 ]; then DATA_ARGS="--quick"; else DATA_ARGS="--presets cub-256 --steps 6 --sizes 256"; fi
timeout 60 t2i_bench data $DATA_ARGS --out "$OUT/bench_data.json" --json_out > /dev/null 2>> "$OUT/errors.log"
note "t2i_bench data rc=$? -> $OUT/bench_data.json"
python - "$OUT" <<'PY' | tee -a "$SUMMARY"
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
for f in sorted(out.glob('bench_train_*.json')):
    r = json.loads(f.read_text())['result']
    for size, s in r['sizes'].items(): print(f"{f.stem}: {size}px bs {s['bs']}: engine {s['engine_img_s']} img/s ({s['precision']}), plain fp32 {s['plain_img_s']} img/s, x{s['speedup']}")
f = out/'cub256_steps.json'
if f.exists(): r = json.loads(f.read_text()); print(f"cub-256 networks: {r['steps']} steps, {r['img_per_s']} img/s ({r['precision']}), losses finite: {r['finite']}")
f = out/'bench_data.json'
if f.exists():
    for name, p in json.loads(f.read_text())['result']['presets'].items():
        print(f"{name}: {p['step_s']} s a step, {p['load_s_per_batch']} s waiting for a batch: {100 * p['data_share']:.1f} % of training time ({p['workers']} workers, {p['precision']})")
PY
