#!/usr/bin/env bash
# Fetches the real DICOM test files shipped inside the pydicom wheel (third-party files from many
# vendors and encoders) into DEST, once: `pip download` of the wheel, then its
# pydicom/data/test_files/*.dcm. Tests that use them are skipped, not passed, when this fails
# (no network). The files are not committed: they are pydicom's, and PyPI serves them.
#   fetch_pydicom_files.sh DEST
set -euo pipefail
dest=$1
if [ -f "$dest/.complete" ]; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! python3 -m pip download --no-deps --quiet --dest "$tmp" "pydicom==3.0.2" >"$tmp/log" 2>&1; then
  echo "fetch_pydicom_files: pip download pydicom failed (offline?):" >&2
  tail -3 "$tmp/log" >&2
  exit 1
fi
mkdir -p "$dest"
python3 - "$tmp"/pydicom-*.whl "$dest" <<'PY'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
n = 0
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if "/data/test_files/" in name and name.endswith(".dcm") and "/" not in name.split("/data/test_files/")[1]:
            with open(os.path.join(dest, os.path.basename(name)), "wb") as f:
                f.write(z.read(name))
            n += 1
print(f"fetch_pydicom_files: {n} files in {dest}")
PY
touch "$dest/.complete"
