#!/usr/bin/env bash
# Makes (once) the Python virtual environment that oracle and format checks run in:
#   make_venv.sh VENV_DIR PACKAGE...
# Python packages are for tests only, never a dependency of medtrain. A failure here (offline)
# makes the tests that need the venv fail to set up rather than pass silently.
set -euo pipefail
venv=$1
shift
stamp="$venv/.installed-$(echo "$*" | tr ' /' '_-')"
[ -f "$stamp" ] && exit 0
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
touch "$stamp"
