#!/usr/bin/env bash
# Classifier training throughput and memory, medtrain vs PyTorch CPU in the same run.
#
#   bench/bench_train.sh BUILD_DIR PYTHON [MODELS] [SIZE] [BATCH]
#     PYTHON  an interpreter with torch and torchvision (the peer: ../shared/peers/
#             torch_train_bench.py, or bench/peers/ when copied there)
#     MODELS  default "resnet18 resnet50"; SIZE default 224; BATCH default 16 (global)
#
# Both sides train with AdamW, fp32, 1 input channel, 14 labels, the same global batch. medtrain
# reads a real pack (its loader runs in a background thread; augmentation off), PyTorch a fixed
# random tensor. Configurations: 1 rank x 2 threads (PyTorch: 2 threads), 2 ranks x 1 thread
# (PyTorch: 2 threads, one process), and medtrain 1 rank x 1 thread and 2 ranks x 1 thread at twice
# the global batch for the scaling figures: at a fixed global batch (2x1 / 2 x 1x1) and at a fixed
# per-rank batch (2x1-weak / 2 x 1x1).
# Prints one JSON line per measurement: img/s over the timed steps and peak RSS per process.
set -euo pipefail
build=$1
python=$2
models=${3:-resnet18 resnet50}
size=${4:-224}
batch=${5:-16}
steps=${STEPS:-8}
warm=${WARMUP:-2}
here=$(cd "$(dirname "$0")" && pwd)
peer=$here/peers/torch_train_bench.py
[ -f "$peer" ] || peer=$here/../../shared/peers/torch_train_bench.py
bin=$build/medtrain
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1

# A pack of 14-label images at SIZE: the synthetic cohort has 6 labels, so the job trains on those
# and the peer on 14 — the head is a rounding error in the FLOPs of either model.
OMP_NUM_THREADS=2 "$bin" synth --out "$tmp/cohort" --n 96 --size "$size,$size" --seed 1 >/dev/null
"$bin" pack --dicom "$tmp/cohort/dicom" --labels "$tmp/cohort/labels.csv" --size "$size" \
    --split 100,0,0 --key-file "$tmp/key" --out "$tmp/pack.h5" >/dev/null 2>&1

cat >"$tmp/job.yaml" <<EOF
task: classify
run: {dir: $tmp/run, seed: 0}
data: {pack: $tmp/pack.h5, augment: false}
train: {optimizer: adamw, lr: 1.0e-4, weight_decay: 0.0, schedule: constant, log_every: 1}
checkpoint: {every: 100000}
EOF

# img/s over steps warm+1..warm+steps from log.jsonl; peak RSS (MB) from GNU time.
measure() { # LABEL RANKS THREADS MODEL [GLOBAL_BATCH]
  local label=$1 ranks=$2 threads=$3 model=$4 batch=${5:-$batch}
  rm -rf "$tmp/run"
  local total=$((warm + steps))
  local cmd=("$bin" train "$tmp/job.yaml" model.arch="$model" train.batch="$batch"
             train.steps="$total" train.threads="$threads")
  if [ "$ranks" -gt 1 ]; then
    OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads /usr/bin/time -f '%M' -o "$tmp/rss" \
      mpirun -np "$ranks" sh -c '/usr/bin/time -f "%M" -o "'"$tmp"'/rss.$OMPI_COMM_WORLD_RANK" "$@"' \
      sh "${cmd[@]}" >"$tmp/out.log" 2>&1
    rss=$(cat "$tmp"/rss.* | sort -n | tail -1)
  else
    OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads /usr/bin/time -f '%M' -o "$tmp/rss" \
      "${cmd[@]}" >"$tmp/out.log" 2>&1
    rss=$(tail -1 "$tmp/rss")
  fi
  local ips
  ips=$(grep '"loss"' "$tmp/run/log.jsonl" | tail -n "$steps" |
        sed 's/.*"img_per_s":\([0-9.e+-]*\).*/\1/' |
        awk '{s += 1 / $1; n++} END {printf "%.3f", n / s}')
  printf '{"peer": "medtrain", "model": "%s", "config": "%s", "ranks": %d, "threads": %d, "batch": %d, "size": %d, "items_per_s": %s, "peak_rss_mb_per_process": %.1f}\n' \
    "$model" "$label" "$ranks" "$threads" "$batch" "$size" "$ips" "$(echo "$rss / 1024" | bc -l)"
}

for model in $models; do
  measure 1x2 1 2 "$model"
  measure 2x1 2 1 "$model"
  measure 1x1 1 1 "$model"
  # the same per-rank batch as 1x1 (how DDP/Horovod report scaling): 2x1-weak / (2 x 1x1)
  measure 2x1-weak 2 1 "$model" $((2 * batch))
  OMP_NUM_THREADS=2 "$python" "$peer" "$model" --batch "$batch" --size "$size" --channels 1 \
      --labels 14 --threads 2 --steps "$steps" --warmup "$warm"
done
