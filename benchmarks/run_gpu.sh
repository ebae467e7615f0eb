#!/usr/bin/env bash
# The GPU checks of the benchmarks, in one script for a lent device machine (each step time-boxed so one
# slow step cannot eat the others). Usage: OUT=folder bash benchmarks/run_gpu.sh
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-runs/bench/gpu}
mkdir -p "$OUT"
py=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$py -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
step() { local t=$1; shift; echo "== $*"; timeout "$t" "$@" 2>&1 | tail -40; echo "rc=${PIPESTATUS[0]}"; }
step 100 $py benchmarks/bench_units.py --device cuda --out "$OUT/units_gpu.csv"
step 140 $py benchmarks/bench_hs.py --device cuda --out "$OUT/hs_gpu.csv"
step 70  $py benchmarks/bench_slices.py --device cuda --autocast --out "$OUT/slices_gpu.csv"
step 70  $py benchmarks/bench_measures.py --device cuda --out "$OUT/measures_gpu.csv"
step 180 $py benchmarks/bench_trajectory_gpu.py --device cuda --checkpoints 3 --csv "$OUT/trajectory_gpu.csv"
