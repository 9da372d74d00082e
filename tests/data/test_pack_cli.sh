#!/usr/bin/env bash
# medtrain synth | pack | info end to end:
#   - a synthetic cohort (every transfer syntax) plus broken files packs on 1 and on 2 ranks into
#     packs with identical images, labels, masks, metadata and splits;
#   - the planted PHI appears in no byte of the packs, logs or error output;
#   - each broken file is skipped with one line naming it and the reason, and counted;
#     --strict makes that fatal and leaves no pack behind;
#   - a bad labels CSV row fails with its line number on 2 ranks without hanging;
#   - h5py reads the pack as documented (when VENV_PYTHON is given);
#   - multi-label masks (--mask-layout multilabel, one PNG per structure from synth
#     --multilabel-masks) pack into [N,C,H,W] 0/1, the same on 1 and 2 ranks, agreeing with the
#     class-index masks of the same films; a missing structure file is skipped naming it (fatal
#     under --strict); multilabel without --mask-classes is a usage error;
#   - pydicom's real third-party files are each packed or skipped with a reason.
#   test_pack_cli.sh MEDTRAIN MPIEXEC SRCDIR [VENV_PYTHON] [PYDICOM_DIR]
set -u
medtrain=$1
mpiexec=$2
srcdir=$3
venv_python=${4:-}
pydicom_dir=${5:-}
source "$(dirname "$0")/../lib.sh"

cohort=$tmp/cohort
run synth 0 "$tmp/synth.log" -- "$medtrain" synth --out "$cohort" --n 24 --size 256,320 --seed 3 \
  --multilabel-masks || exit 1

# Broken files beside the good ones.
bad_dir=$cohort/dicom/zz_broken
mkdir -p "$bad_dir"
echo "not an image" >"$bad_dir/notes.txt"
: >"$bad_dir/empty.dcm"
first=$(find "$cohort/dicom" -name '*.dcm' -size +10k | sort | head -n 1)
head -c 3000 "$first" >"$bad_dir/truncated.dcm"
n_good=$(find "$cohort/dicom" -name 'img_*.dcm' | wc -l)

common=(--dicom "$cohort/dicom" --labels "$cohort/labels.csv" --masks "$cohort/masks"
        --size 64 --key-file "$tmp/site.key")
run pack_1_rank 0 "$tmp/pack1.log" -- "$medtrain" pack "${common[@]}" --out "$tmp/p1.h5"
run pack_2_ranks 0 "$tmp/pack2.log" -- "$mpiexec" -n 2 "$medtrain" pack "${common[@]}" --out "$tmp/p2.h5"
if grep -q "matched no packed image" "$tmp/pack2.log"; then
  bad label_rows_merged_across_ranks "2 ranks report label rows as unmatched:" "$(grep matched "$tmp/pack2.log")"
else ok label_rows_merged_across_ranks; fi
expect_in pack_summary "$tmp/pack1.log" "packed $n_good images into .*skipped 3 of $((n_good + 3)) files"
for f in notes.txt empty.dcm truncated.dcm; do expect_in "skip_line_$f" "$tmp/pack1.log" "WARN +skipped .*zz_broken/$f"; done
expect_in skip_counts "$tmp/pack1.log" "skipped, unreadable or not DICOM/PNG/JPEG: 3"
# Every skip line names its file (an absolute path), whatever stage failed.
if grep "WARN  skipped" "$tmp/pack1.log" | grep -qv "skipped /"; then bad skip_lines_name_files "$(grep "WARN  skipped" "$tmp/pack1.log" | grep -v "skipped /")"; else ok skip_lines_name_files; fi
if [ "$(stat -c %a "$tmp/site.key")" = 600 ]; then ok key_file_mode_600; else bad key_file_mode_600 "$(stat -c %a "$tmp/site.key")"; fi

# 1 and 2 ranks: the same content, object by object (creation time aside).
same=1
for obj in /images /labels /masks /meta/case_id /meta/modality /meta/view /meta/source_digest \
           /meta/pixel_spacing /meta/split /splits/train /splits/val /splits/test; do
  if ! h5diff -q "$tmp/p1.h5" "$tmp/p2.h5" "$obj" "$obj" >/dev/null 2>&1; then same=0; bad "same_1_vs_2_ranks $obj" "differs"; fi
done
[ "$same" = 1 ] && ok same_content_1_vs_2_ranks
d1=$(h5dump -a /input_digest "$tmp/p1.h5" | grep -o '"[0-9a-f]\{64\}"')
d2=$(h5dump -a /input_digest "$tmp/p2.h5" | grep -o '"[0-9a-f]\{64\}"')
if [ -n "$d1" ] && [ "$d1" = "$d2" ]; then ok same_input_digest; else bad same_input_digest "$d1 vs $d2"; fi

# Privacy: no planted identifier anywhere in what pack wrote or printed.
hits=$(grep -a -c -E "QZPHI|19230417" "$tmp/p1.h5" "$tmp/p2.h5" "$tmp/pack1.log" "$tmp/pack2.log" | awk -F: '{s += $2} END {print s}')
planted=$(grep -a -r -l "QZPHI" "$cohort/dicom" | wc -l) # (deflated files hide it from grep)
if [ "$planted" -gt 0 ] && [ "$hits" = 0 ]; then ok no_phi_in_outputs; else bad no_phi_in_outputs "planted in input: $planted, found in outputs: $hits"; fi

run info 0 "$tmp/info.log" -- "$medtrain" info "$tmp/p1.h5"
expect_in info_labels "$tmp/info.log" "Effusion +[0-9]+/[0-9]+"
expect_in info_masks "$tmp/info.log" "masks: 3 classes .*lung [0-9.]+%"
expect_in info_splits "$tmp/info.log" "splits: train [0-9]+, val [0-9]+, test [0-9]+"

if [ -n "$venv_python" ]; then
  labels=$(head -n 1 "$cohort/labels.csv" | cut -d, -f2-)
  run h5py_schema 0 "$tmp/h5py.log" -- "$venv_python" "$srcdir/check_pack_h5py.py" "$tmp/p2.h5" \
    --labels "$labels" --masks background,lung,heart --n "$n_good" --size 64 --dtype u8
fi

# --strict: the first broken file ends the job on every rank; no pack, no temporary file.
run strict 1 "$tmp/strict.log" -- "$mpiexec" -n 2 "$medtrain" pack "${common[@]}" --strict --out "$tmp/strict.h5"
expect_in strict_names_file "$tmp/strict.log" "--strict: .*zz_broken/"
if [ ! -e "$tmp/strict.h5" ] && [ ! -e "$tmp/strict.h5.tmp" ]; then ok strict_leaves_nothing; else bad strict_leaves_nothing "found $(ls "$tmp"/strict*)"; fi

# Multi-label masks: one binary PNG per structure; 1 and 2 ranks give the same pack.
structures=right_lung,left_lung,heart
ml=(--dicom "$cohort/dicom" --masks "$cohort/masks_ml" --mask-layout multilabel
    --mask-classes "$structures" --size 64 --key-file "$tmp/site.key")
run pack_ml_1_rank 0 "$tmp/ml1.log" -- "$medtrain" pack "${ml[@]}" --out "$tmp/ml1.h5"
run pack_ml_2_ranks 0 "$tmp/ml2.log" -- "$mpiexec" -n 2 "$medtrain" pack "${ml[@]}" --out "$tmp/ml2.h5"
expect_in pack_ml_summary "$tmp/ml1.log" "packed $n_good images into .*skipped 3 of $((n_good + 3)) files"
same=1
for obj in /images /masks /meta/case_id /meta/source_digest /meta/split /splits/train; do
  if ! h5diff -q "$tmp/ml1.h5" "$tmp/ml2.h5" "$obj" "$obj" >/dev/null 2>&1; then same=0; bad "same_ml_1_vs_2_ranks $obj" "differs"; fi
done
[ "$same" = 1 ] && ok same_multilabel_content_1_vs_2_ranks
if h5diff -q "$tmp/ml1.h5" "$tmp/p1.h5" /images /images >/dev/null 2>&1; then ok ml_same_images_as_index_pack; else bad ml_same_images_as_index_pack "differ"; fi
run info_ml 0 "$tmp/info_ml.log" -- "$medtrain" info "$tmp/ml1.h5"
expect_in info_ml_layout "$tmp/info_ml.log" "masks: multi-label, 3 classes .*right_lung [0-9.]+% left_lung [0-9.]+% heart [0-9.]+%"
if [ -n "$venv_python" ]; then
  run h5py_schema_multilabel 0 "$tmp/h5py_ml.log" -- "$venv_python" "$srcdir/check_pack_h5py.py" \
    "$tmp/ml2.h5" --masks "$structures" --mask-layout multilabel --n "$n_good" --size 64 --dtype u8
  # The planes agree with the class-index masks of the same films (same geometry, nearest
  # resizing): heart where the index says heart, else a lung where it says lung; and they overlap.
  run ml_matches_index_masks 0 "$tmp/ml_vs_index.log" -- "$venv_python" - "$tmp/ml1.h5" "$tmp/p1.h5" <<'PY'
import sys
import h5py
import numpy as np
ml, ix = h5py.File(sys.argv[1], "r")["masks"][...], h5py.File(sys.argv[2], "r")["masks"][...]
lung = (ml[:, 0] | ml[:, 1]).astype(bool)
heart = ml[:, 2].astype(bool)
want = np.where(heart, 2, np.where(lung, 1, 0))
assert np.array_equal(want, ix), f"{int((want != ix).sum())} pixels differ"
assert not (ml[:, 0] & ml[:, 1]).any(), "the lungs overlap"
overlap = int((heart & lung).sum())
assert overlap > 0, "the heart overlaps no lung"
print(f"planes match the index masks; heart/lung overlap {overlap} px")
PY
fi

# A missing structure file: the image is skipped naming the file; fatal under --strict.
cp -r "$cohort/masks_ml" "$tmp/masks_ml2"
rm "$tmp/masks_ml2/heart/img_000002.png"
ml2=(--dicom "$cohort/dicom" --masks "$tmp/masks_ml2" --mask-layout multilabel
     --mask-classes "$structures" --size 64 --key-file "$tmp/site.key")
run pack_ml_missing 0 "$tmp/mlmiss.log" -- "$mpiexec" -n 2 "$medtrain" pack "${ml2[@]}" --out "$tmp/mlmiss.h5"
expect_in pack_ml_missing_names_file "$tmp/mlmiss.log" "skipped .*img_000002.dcm: no mask .*masks_ml2/heart/img_000002.png \(class heart\)"
expect_in pack_ml_missing_counted "$tmp/mlmiss.log" "skipped, mask problem: 1"
run pack_ml_missing_strict 1 "$tmp/mlmiss_strict.log" -- "$medtrain" pack "${ml2[@]}" --strict --out "$tmp/mlstrict.h5"
expect_in pack_ml_missing_strict_message "$tmp/mlmiss_strict.log" "--strict: .*masks_ml2/heart/img_000002.png"
if [ ! -e "$tmp/mlstrict.h5" ] && [ ! -e "$tmp/mlstrict.h5.tmp" ]; then ok pack_ml_strict_leaves_nothing; else bad pack_ml_strict_leaves_nothing "found $(ls "$tmp"/mlstrict*)"; fi
run pack_ml_needs_classes 2 "$tmp/mlnc.log" -- "$medtrain" pack --dicom "$cohort/dicom" --masks "$cohort/masks_ml" --mask-layout multilabel --key-file "$tmp/site.key" --out "$tmp/mlnc.h5"
expect_in pack_ml_needs_classes_message "$tmp/mlnc.log" "--mask-layout multilabel needs --mask-classes"
run pack_bad_layout 2 "$tmp/mlbl.log" -- "$medtrain" pack "${common[@]}" --mask-layout overlapping --out "$tmp/mlbl.h5"
expect_in pack_bad_layout_message "$tmp/mlbl.log" "--mask-layout overlapping: expected index or multilabel"

# A bad labels row: an error with the line number, on 2 ranks, no hang.
cp "$cohort/labels.csv" "$tmp/bad.csv"
sed -i '5s/,[01],/,maybe,/' "$tmp/bad.csv"
run bad_labels 1 "$tmp/badlabels.log" -- "$mpiexec" -n 2 "$medtrain" pack --dicom "$cohort/dicom" --labels "$tmp/bad.csv" --size 64 --key-file "$tmp/site.key" --out "$tmp/bad.h5"
expect_in bad_labels_line "$tmp/badlabels.log" "bad.csv:5: column '[A-Za-z]+': expected 1, 0, -1 or blank, found 'maybe'"

run exists 2 "$tmp/exists.log" -- "$medtrain" pack "${common[@]}" --out "$tmp/p1.h5"
expect_in exists_message "$tmp/exists.log" "already exists"

# PNG images through a manifest (the masks serve as images here), u16 storage, padding.
python3 - "$cohort" "$tmp/manifest.json" <<'PY'
import json, os, sys
cohort, out = sys.argv[1], sys.argv[2]
masks = sorted(os.listdir(os.path.join(cohort, "masks")))[:6]
entries = [{"image_path": os.path.join(cohort, "masks", m), "case_id": f"c{i // 2}", "modality": "CR",
            "labels": {"Lung": 1, "Other": None if i % 3 == 0 else 0}} for i, m in enumerate(masks)]
json.dump(entries, open(out, "w"))
PY
run manifest 0 "$tmp/manifest.log" -- "$mpiexec" -n 2 "$medtrain" pack --manifest "$tmp/manifest.json" --size 48 --dtype u16 --square pad --key-file "$tmp/site.key" --out "$tmp/m.h5"
expect_in manifest_summary "$tmp/manifest.log" "packed 6 images"
if [ -n "$venv_python" ]; then
  run manifest_h5py 0 "$tmp/mh5py.log" -- "$venv_python" "$srcdir/check_pack_h5py.py" "$tmp/m.h5" --labels Lung,Other --n 6 --size 48 --dtype u16
fi

# Bad masks and images: a mask of the wrong size, an unreadable PNG in a manifest.
cp -r "$cohort" "$tmp/cohort2"
python3 - "$tmp/cohort2/masks/img_000001.png" "$tmp/broken.png" <<'PY'
import struct, sys, zlib
def png(path, w, h):
    raw = b"".join(b"\0" + bytes(w) for _ in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
png(sys.argv[1], 10, 10)
open(sys.argv[2], "wb").write(open(sys.argv[1], "rb").read()[:40])  # cut inside IDAT
PY
run bad_mask 0 "$tmp/badmask.log" -- "$medtrain" pack --dicom "$tmp/cohort2/dicom" --labels "$tmp/cohort2/labels.csv" --masks "$tmp/cohort2/masks" --size 64 --key-file "$tmp/site.key" --out "$tmp/badmask.h5"
expect_in bad_mask_line "$tmp/badmask.log" "skipped .*img_000001.png: mask is 10x10, the image 320x256"
expect_in bad_mask_count "$tmp/badmask.log" "skipped, mask problem: 1"
echo '[{"image_path": "'"$tmp"'/broken.png", "case_id": "x"}, {"image_path": "'"$cohort"'/masks/img_000002.png", "case_id": "y"}]' >"$tmp/broken.json"
run bad_png 0 "$tmp/badpng.log" -- "$medtrain" pack --manifest "$tmp/broken.json" --size 32 --key-file "$tmp/site.key" --out "$tmp/badpng.h5"
expect_in bad_png_line "$tmp/badpng.log" "skipped .*broken.png: "
expect_in bad_png_summary "$tmp/badpng.log" "packed 1 images .*skipped 1 of 2 files"

# Real third-party DICOM files: every file is packed or skipped with a stated reason.
if [ -n "$pydicom_dir" ] && [ -d "$pydicom_dir" ]; then
  n_files=$(find "$pydicom_dir" -name '*.dcm' | wc -l)
  run pydicom_files 0 "$tmp/pyd.log" -- "$mpiexec" -n 2 "$medtrain" pack --dicom "$pydicom_dir" --size 64 --key-file "$tmp/site.key" --out "$tmp/pyd.h5"
  packed=$(sed -n 's/^packed \([0-9]*\) images.*/\1/p' "$tmp/pyd.log")
  skipped=$(grep -c "WARN  skipped" "$tmp/pyd.log")
  if grep "WARN  skipped" "$tmp/pyd.log" | grep -qv "skipped $pydicom_dir/"; then
    bad pydicom_skip_lines_name_files "$(grep "WARN  skipped" "$tmp/pyd.log" | grep -v "skipped $pydicom_dir/")"
  else
    ok pydicom_skip_lines_name_files
  fi
  if [ -n "$packed" ] && [ $((packed + skipped)) = "$n_files" ] && [ "$packed" -gt 20 ]; then
    ok "pydicom_accounted ($packed packed, $skipped skipped with reasons, of $n_files)"
  else
    bad pydicom_accounted "packed=$packed skipped=$skipped files=$n_files"
  fi
fi

finish
