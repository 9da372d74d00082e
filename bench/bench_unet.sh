#!/usr/bin/env bash
# U-Net training throughput and memory, medtrain vs PyTorch CPU in the same run.
#
#   bench/bench_unet.sh BUILD_DIR PYTHON [SIZES] [BATCH]
#     PYTHON  an interpreter with torch (and monai for the MONAI peer)
#     SIZES   default "256 512"; BATCH default 8 (global)
#
# medtrain trains its U-Net (depth 4, 16 channels at full resolution: 16..256, batch norm,
# transposed-conv upsampling, 3 classes, Dice+CE, AdamW) on a real pack with masks (loader in a
# background thread, augmentation off), 1 rank x 2 threads and 2 ranks x 1 thread. Peers, each
# with 2 threads on a fixed random batch:
#   pytorch-same-unet  the identical network (tests/oracles/unet_oracle.py), CE loss
#                      (bench/peers/torch_unet_bench.py): the like-for-like ratio
#   pytorch (MONAI)    ../shared/peers/torch_train_bench.py unet: MONAI's UNet with channels
#                      16..256, strides 2 (one conv per level and direction: a lighter network
#                      than the classic double-conv U-Net, so its img/s is not like for like)
# Prints one JSON line per measurement: img/s over the timed steps and peak RSS per process.
set -euo pipefail
build=$1
python=$2
sizes=${3:-256 512}
batch=${4:-8}
steps=${STEPS:-6}
warm=${WARMUP:-2}
here=$(cd "$(dirname "$0")" && pwd)
peer=$here/peers/torch_train_bench.py
[ -f "$peer" ] || peer=$here/../../shared/peers/torch_train_bench.py
same=$here/peers/torch_unet_bench.py
bin=$build/medtrain
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1

measure() { # LABEL RANKS THREADS SIZE
  local label=$1 ranks=$2 threads=$3 size=$4
  rm -rf "$tmp/run"
  local total=$((warm + steps))
  local cmd=("$bin" train "$tmp/job.yaml" data.pack="$tmp/pack$size.h5" train.batch="$batch"
             train.steps="$total" train.threads="$threads")
  if [ "$ranks" -gt 1 ]; then
    OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads mpirun -np "$ranks" sh -c \
      '/usr/bin/time -f "%M" -o "'"$tmp"'/rss.$OMPI_COMM_WORLD_RANK" "$@"' sh "${cmd[@]}" \
      >"$tmp/out.log" 2>&1
    rss=$(cat "$tmp"/rss.* | sort -n | tail -1)
    rm -f "$tmp"/rss.*
  else
    OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads /usr/bin/time -f '%M' -o "$tmp/rss" \
      "${cmd[@]}" >"$tmp/out.log" 2>&1
    rss=$(tail -1 "$tmp/rss")
  fi
  local ips
  ips=$(grep '"loss"' "$tmp/run/log.jsonl" | tail -n "$steps" |
        sed 's/.*"img_per_s":\([0-9.e+-]*\).*/\1/' |
        awk '{s += 1 / $1; n++} END {printf "%.3f", n / s}')
  printf '{"peer": "medtrain", "model": "unet", "config": "%s", "ranks": %d, "threads": %d, "batch": %d, "size": %d, "items_per_s": %s, "peak_rss_mb_per_process": %.1f}\n' \
    "$label" "$ranks" "$threads" "$batch" "$size" "$ips" "$(echo "$rss / 1024" | bc -l)"
}

cat >"$tmp/job.yaml" <<EOF2
task: segment
run: {dir: $tmp/run, seed: 0}
data: {pack: unused, augment: false}
model: {arch: unet, depth: 4, channels: 16, norm: batch, upsample: transpose}
train: {optimizer: adamw, lr: 1.0e-4, weight_decay: 0.0, schedule: constant, log_every: 1}
checkpoint: {every: 100000}
EOF2

for size in $sizes; do
  OMP_NUM_THREADS=2 "$bin" synth --out "$tmp/cohort$size" --n 32 --size "$size,$size" --seed 1 >/dev/null
  "$bin" pack --dicom "$tmp/cohort$size/dicom" --masks "$tmp/cohort$size/masks" \
      --mask-classes background,lung,heart --size "$size" --split 100,0,0 --key-file "$tmp/key" \
      --out "$tmp/pack$size.h5" >/dev/null 2>&1
  measure 1x2 1 2 "$size"
  measure 2x1 2 1 "$size"
  OMP_NUM_THREADS=2 "$python" "$same" --batch "$batch" --size "$size" --depth 4 --channels 16 \
      --classes 3 --threads 2 --steps "$steps" --warmup "$warm"
  if "$python" -c "import monai" 2>/dev/null; then
    OMP_NUM_THREADS=2 "$python" "$peer" unet --batch "$batch" --size "$size" --channels 1 \
        --classes 3 --unet-channels 16,32,64,128,256 --threads 2 --steps "$steps" --warmup "$warm"
  fi
done
