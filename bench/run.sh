#!/usr/bin/env bash
# Runs the benchmarks from a build directory and prints their tables and JSON lines.
#   bench/run.sh [BUILD_DIR]      (default: build)
# Copy the numbers, the machine (printed first) and the date into docs/PERFORMANCE.md.
set -euo pipefail
build=${1:-build}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
cores=$(nproc)
echo "== machine: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), ${cores} cores, $(date -u +%F) =="
echo "== GEMM, 1 thread =="
OMP_NUM_THREADS=1 "$build/bench/bench_gemm" --threads 1
echo "== GEMM, ${cores} threads =="
OMP_NUM_THREADS=$cores "$build/bench/bench_gemm" --threads "$cores"
echo "== convolutions (ResNet layer shapes, batch 32), ${cores} threads =="
OMP_NUM_THREADS=$cores "$build/bench/bench_conv" --threads "$cores"
echo "== all-reduce, 2 ranks =="
OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 mpirun -np 2 "$build/bench/bench_allreduce"
echo "== loader (1 reader thread) =="
OMP_NUM_THREADS=1 "$build/bench/bench_loader"
echo "== pack: 2048x2048 16-bit films, 1 vs 2 ranks =="
bench/bench_pack.sh "$build" 48
