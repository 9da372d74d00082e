#!/bin/sh
# make demo: the whole pipeline on the CPU with 2 MPI ranks, on synthetic data it generates.
#   synth (2000 DICOM files, 256x256) -> pack (128x128) -> train ResNet-18 -> eval on the test split
# Usage: scripts/demo.sh BUILD_DIR   (outputs in BUILD_DIR/demo/; the cohort and pack are reused)
set -eu
build=${1:-build}
out=$build/demo
bin=$build/medtrain
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
mpirun="mpirun -np 2"
start=$(date +%s)
mkdir -p "$out"

if [ ! -f "$out/synth/labels.csv" ]; then
    echo "== synth: 2000 synthetic chest radiographs (DICOM, 256x256) in $out/synth"
    rm -rf "$out/synth"
    OMP_NUM_THREADS=2 "$bin" synth --out "$out/synth" --n 2000 --size 256,256 --seed 7
fi
if [ ! -f "$out/pack.h5" ]; then
    echo "== pack: $out/pack.h5 (128x128, patient-level 80/10/10 split)"
    $mpirun "$bin" pack --dicom "$out/synth/dicom" --labels "$out/synth/labels.csv" \
        --size 128 --out "$out/pack.h5" --key-file "$out/site.key"
fi
echo "== train: ResNet-18 on 2 ranks ($out/run)"
rm -rf "$out/run"
$mpirun "$bin" train jobs/classifier.yaml data.pack="$out/pack.h5" run.dir="$out/run" \
    train.batch=32 train.steps=${DEMO_STEPS:-250} train.lr=0.05 train.warmup_steps=20 \
    train.log_every=25 train.threads=1 checkpoint.every=100
echo "== eval: test split"
$mpirun "$bin" eval "$out/run" --split test
echo "== done in $(( $(date +%s) - start )) s; the run lives in $out/run (model/, eval-test/, log.jsonl)"
