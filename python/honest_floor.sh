#!/usr/bin/env bash
# The honest floor and the cheap-model audit on SmolLM2-135M-Instruct through vLLM (RESULTS.md, section e).
# One engine at a time; writes python/results/honest_floor_*.{json,txt} (the tables and the full reports).
#   bash python/honest_floor.sh [float32|bfloat16|cheaper|moe ...]   (default: all four)
# moe: a tiny random Qwen3-MoE (python/tiny_moe.py), float32 and bfloat16.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=python/results
mkdir -p "$OUT"
export VLLM_LOGGING_STREAM=ext://sys.stderr
runs=("$@")
[ ${#runs[@]} -eq 0 ] && runs=(float32 bfloat16 cheaper moe)
for run in "${runs[@]}"; do
  case $run in
    float32|bfloat16)
      $PY -m poc_kernels selfcheck --dtype "$run" --nonces 64 --batch-size 32 --seq-len 64 \
        --json "$OUT/honest_floor_$run.json" > "$OUT/honest_floor_$run.txt"
      ;;
    cheaper)
      $PY -m poc_kernels audit --cheaper bf16 --cheaper int8 --cheaper fp8 --cheaper drop-layers:1 \
        --nonces 64 --batch-size 32 --seq-len 64 --out "$OUT/honest_floor_cheaper.json" > "$OUT/honest_floor_cheaper.txt"
      ;;
    moe)
      moe=$(mktemp -d)
      $PY python/tiny_moe.py "$moe" > /dev/null
      for dtype in float32 bfloat16; do
        $PY -m poc_kernels selfcheck --model "$moe" --dtype "$dtype" --nonces 64 --batch-size 32 --seq-len 64 \
          --json "$OUT/honest_floor_moe_$dtype.json" > "$OUT/honest_floor_moe_$dtype.txt"
      done
      rm -rf "$moe"
      ;;
    *) echo "unknown run $run: float32, bfloat16, cheaper or moe" >&2; exit 2 ;;
  esac
done
