#!/usr/bin/env bash
# Pack throughput: images/s per core packing 2048x2048 16-bit films, uncompressed (explicit VR
# little endian) and JPEG 2000 lossless, on 1 rank and on 2 ranks (1 thread each), to a 512 pack.
# The 2-rank/1-rank ratio is the scaling (target >= 1.8x). Rates are the pack command's own
# (its final progress line: from the first file to the last append, without MPI start-up);
# wall time including mpirun is shown beside them. Prints a table and JSON lines.
#   bench_pack.sh BUILD_DIR [N_IMAGES]
set -euo pipefail
build=$1
n=${2:-32}
medtrain=$build/medtrain
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

printf '%-14s %6s %10s %12s %14s\n' input ranks "wall s" "img/s" "img/s per core"
for syntax in explicit-le jpeg2000; do
  "$medtrain" synth --out "$tmp/$syntax" --n "$n" --size 2048,2048 --bits 16 --syntax "$syntax" \
    --threads "$(nproc)" --seed 7 >/dev/null
  declare -A rate=()
  for ranks in 1 2; do
    start=$(date +%s.%N)
    mpirun -np "$ranks" "$medtrain" pack --dicom "$tmp/$syntax/dicom" --size 512 --round 4 \
      --key-file "$tmp/key" --out "$tmp/$syntax-$ranks.h5" >"$tmp/log" 2>&1
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')
    rate[$ranks]=$(sed -n 's/.*pack: [0-9]*\/[0-9]* file, \([0-9.]*\) file\/s.*/\1/p' "$tmp/log" | tail -n 1)
    per_core=$(awk -v r="${rate[$ranks]}" -v k="$ranks" 'BEGIN {print r / k}')
    printf '%-14s %6d %10.2f %12.2f %14.2f\n' "$syntax" "$ranks" "$secs" "${rate[$ranks]}" "$per_core"
  done
  speedup=$(awk -v a="${rate[2]}" -v b="${rate[1]}" 'BEGIN {print a / b}')
  printf '%-14s speedup with 2 ranks: %.2fx\n' "$syntax" "$speedup"
  printf '{"bench":"pack","input":"%s","images":%d,"size":"2048x2048x16bit","img_s_1rank":%.3f,"img_s_2ranks":%.3f,"speedup":%.3f}\n' \
    "$syntax" "$n" "${rate[1]}" "${rate[2]}" "$speedup"
  rm -rf "${tmp:?}/$syntax" "$tmp"/*.h5
done
