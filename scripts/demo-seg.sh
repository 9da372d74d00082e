#!/bin/sh
# make demo-seg: lung and heart segmentation on the CPU with 2 MPI ranks, on synthetic data.
#   synth (DICOM + lung/heart masks, 256x256) -> pack with masks (128x128) -> train a U-Net ->
#   eval on the test split (Dice, IoU, HD95, overlay PNGs)
# Usage: scripts/demo-seg.sh BUILD_DIR   (outputs in BUILD_DIR/demo-seg/; the cohort is shared
# with make demo when it exists)
set -eu
build=${1:-build}
out=$build/demo-seg
bin=$build/medtrain
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
mpirun="mpirun -np 2"
start=$(date +%s)
mkdir -p "$out"
synth=$build/demo/synth
if [ ! -f "$synth/labels.csv" ]; then
    synth=$out/synth
    if [ ! -f "$synth/labels.csv" ]; then
        echo "== synth: ${DEMO_SEG_N:-1000} synthetic chest radiographs with lung/heart masks in $synth"
        rm -rf "$synth"
        OMP_NUM_THREADS=2 "$bin" synth --out "$synth" --n "${DEMO_SEG_N:-1000}" --size 256,256 --seed 7
    fi
fi
if [ ! -f "$out/pack.h5" ]; then
    echo "== pack: $out/pack.h5 (128x128, masks background/lung/heart)"
    $mpirun "$bin" pack --dicom "$synth/dicom" --masks "$synth/masks" \
        --mask-classes background,lung,heart --size 128 --out "$out/pack.h5" --key-file "$out/site.key"
fi
echo "== train: U-Net on 2 ranks ($out/run)"
rm -rf "$out/run"
$mpirun "$bin" train jobs/segment.yaml data.pack="$out/pack.h5" run.dir="$out/run" \
    model.channels=${DEMO_SEG_CHANNELS:-16} train.batch=16 train.steps=${DEMO_SEG_STEPS:-300} \
    train.lr=0.003 train.warmup_steps=20 train.log_every=25 train.threads=1 checkpoint.every=100
echo "== eval: test split"
$mpirun "$bin" eval "$out/run" --split test
echo "== done in $(( $(date +%s) - start )) s; the run lives in $out/run (model/, eval-test/overlays/)"
