#!/usr/bin/env bash
# `medtrain anonymize` end to end on a small tree of pydicom's real files plus files that are not
# DICOM: exit codes, the skip lines and summary, the key file (made with mode 600, reused, never
# copied), the mirrored output tree, no identifying value left in any output byte, same key same
# bytes, --strict.
#   test_anonymize.sh MEDTRAIN PYDICOM_FILES_DIR
set -u
medtrain=$(realpath "$1")
pyd=$(realpath "$2")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
ok() { echo "ok: $*"; }

for f in CT_small MR_small JPEG2000 image_dfl MR_truncated; do
  [ -f "$pyd/$f.dcm" ] || { echo "FAIL: $pyd/$f.dcm missing (fetch_pydicom_files fixture)"; exit 1; }
done
mkdir -p src/a/b src/c/d/e
cp "$pyd/MR_small.dcm" src/a/b/
cp "$pyd/CT_small.dcm" src/a/
cp "$pyd/JPEG2000.dcm" src/
cp "$pyd/image_dfl.dcm" src/c/d/e/
cp "$pyd/MR_truncated.dcm" src/c/
echo "meeting notes, not DICOM" >src/notes.txt
: >src/a/empty.dcm

# Values that identify someone in the inputs (names, IDs, nested IDs, institutions, UIDs).
phi=("CompressedSamples^CT1" "CompressedSamples^MR1" "CompressedSamples^NM1" "1CT1" "4MR1" "8NM1"
  "ABCD1234" "1234ABCD" "JFK IMAGING CENTER" "Hospital Name 12345"
  "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322" "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457"
  "1.3.6.1.4.1.5962.1.2.8.20040826185059.5457" "1.3.6.1.4.1.5962.1.2.0.977067310.6001.0")

# 1. A run that makes its key (in a folder that must exist).
"$medtrain" anonymize --src src --out out0 --key-file nokeys/site.key >/dev/null 2>nokeys.err
rc=$?
[ $rc -eq 1 ] && grep -q "nokeys/site.key: cannot create the key file" nokeys.err &&
  ok "key in a missing folder refused" || fail "key in a missing folder: status $rc, $(cat nokeys.err)"
mkdir keys
"$medtrain" anonymize --src src --out out --key-file keys/site.key >run1.out 2>run1.err
rc=$?
[ $rc -eq 0 ] && ok "anonymize exits 0" || fail "anonymize exit status $rc: $(cat run1.err)"
cat run1.out
[ "$(stat -c %a keys/site.key)" = 600 ] && ok "key file mode 600" || fail "key file mode $(stat -c %a keys/site.key)"
[ "$(stat -c %s keys/site.key)" = 32 ] && ok "key file 32 bytes" || fail "key file $(stat -c %s keys/site.key) bytes"
grep -q "created key file keys/site.key" run1.out && ok "key creation reported" || fail "no key creation line"

for f in a/b/MR_small.dcm a/CT_small.dcm JPEG2000.dcm c/d/e/image_dfl.dcm; do
  [ -s "out/$f" ] && ok "out/$f written" || fail "out/$f missing"
done
for f in notes.txt a/empty.dcm c/MR_truncated.dcm; do
  [ -e "out/$f" ] && fail "out/$f should not exist" || ok "out/$f not written"
done
grep -qx "skipped src/notes.txt: not a DICOM file" run1.out && ok "text file skipped" || fail "no skip line for notes.txt"
grep -q "^skipped src/a/empty.dcm: empty file" run1.out && ok "empty file skipped" || fail "no skip line for empty.dcm"
grep -q "^skipped src/c/MR_truncated.dcm: pixel data is .* truncated" run1.out && ok "truncated file skipped" ||
  fail "no skip line for MR_truncated.dcm"
[ "$(grep -c '^skipped ' run1.out)" = 3 ] && ok "3 skip lines" || fail "$(grep -c '^skipped ' run1.out) skip lines"
grep -q "^anonymize: 4 files written to out, 3 skipped" run1.out && ok "summary line" || fail "summary line"
[ -z "$(find out -name '*.key' -o -name 'notes.txt')" ] && ok "no key or stray file in out" || fail "stray files in out"

# 2. Nothing identifying in any output byte, nor in what the command printed.
for v in "${phi[@]}"; do
  if grep -r -a -F -q -- "$v" out run1.out run1.err; then fail "'$v' found in the output"; fi
done
ok "no identifying value in ${#phi[@]} checks"
if command -v gdcmdump >/dev/null; then
  gdcmdump out/a/CT_small.dcm >dump.txt 2>/dev/null
  grep -q "(0012,0062) CS \[YES \?\]" dump.txt && ok "Patient Identity Removed = YES" || fail "no (0012,0062) YES"
  grep -q "(0020,000d) UI \[2.25." dump.txt && ok "study UID remapped to 2.25." || fail "study UID not 2.25."
  if grep -q "^(0009\|^(0019\|^(0029\|^(0043" dump.txt; then fail "private tags left"; else ok "no private tags"; fi
fi

# 3. Same key, same bytes; another key, other UIDs.
"$medtrain" anonymize --src src --out out2 --key-file keys/site.key >run2.out 2>&1 || fail "second run failed"
cmp -s out/a/CT_small.dcm out2/a/CT_small.dcm && ok "same key, same bytes" || fail "same key gave other bytes"
head -c 32 /dev/urandom >other.key
chmod 600 other.key
"$medtrain" anonymize --src src --out out3 --key-file other.key >run3.out 2>&1 || fail "third run failed"
cmp -s out/a/CT_small.dcm out3/a/CT_small.dcm && fail "another key gave the same bytes" || ok "another key, other bytes"
grep -q "created key file" run2.out && fail "existing key re-created" || ok "existing key reused"

# 4. Key file checks: too short, readable by others, inside --out.
head -c 10 /dev/urandom >short.key
"$medtrain" anonymize --src src --out out4 --key-file short.key >/dev/null 2>short.err
rc=$?
[ $rc -eq 1 ] && grep -q "at least 32" short.err && ok "short key refused" || fail "short key: status $rc, $(cat short.err)"
head -c 32 /dev/urandom >open.key
chmod 644 open.key
"$medtrain" anonymize --src src --out out5 --key-file open.key >/dev/null 2>open.err || fail "open key run failed"
grep -q "can be read by others" open.err && ok "world-readable key warned about" || fail "no warning for a 644 key"
"$medtrain" anonymize --src src --out out --key-file out/inside.key >/dev/null 2>inside.err
rc=$?
[ $rc -eq 2 ] && [ ! -e out/inside.key ] && ok "key inside --out refused" || fail "key inside --out: status $rc"

# 5. --strict: a skipped file ends the run with status 1, naming it.
mkdir -p strict
cp "$pyd/MR_small.dcm" strict/
echo "not DICOM" >strict/readme.txt
"$medtrain" anonymize --src strict --out strict_out --key-file keys/site.key --strict >strict.out 2>strict.err
rc=$?
[ $rc -eq 1 ] && ok "--strict exits 1" || fail "--strict exit status $rc"
grep -q "strict/readme.txt: not a DICOM file" strict.err && ok "--strict names the file" || fail "--strict message: $(cat strict.err)"
"$medtrain" anonymize --src strict --out strict_out2 --key-file keys/site.key >/dev/null 2>&1 &&
  ok "without --strict the same tree passes" || fail "non-strict run failed"

# 6. Usage errors exit 2.
"$medtrain" anonymize --out x >/dev/null 2>&1
[ $? -eq 2 ] && ok "missing --src: status 2" || fail "missing --src: not 2"
"$medtrain" anonymize --src src --out src/inside >/dev/null 2>&1
[ $? -eq 2 ] && [ ! -e src/inside/JPEG2000.dcm ] && ok "--out inside --src refused" || fail "--out inside --src"
"$medtrain" anonymize --src src --out x --bogus >/dev/null 2>&1
[ $? -eq 2 ] && ok "unknown option: status 2" || fail "unknown option: not 2"
"$medtrain" anonymize --help | grep -q "usage: medtrain anonymize" && ok "--help" || fail "--help"

if [ $failures -ne 0 ]; then
  echo "test_anonymize: $failures failed"
  exit 1
fi
echo "test_anonymize: all passed"
