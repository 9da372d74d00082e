# Shared by the end-to-end test scripts (source it): a scratch directory removed on exit, MPI
# settings for root and oversubscription, and PASS/FAIL bookkeeping.
#   ok NAME; bad NAME [DETAIL...]; run NAME CODE LOG -- CMD...  (CODE may be "nonzero");
#   expect_in NAME FILE REGEX; finish  (prints the counts; exit status 1 if anything failed)
passed=0
failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

ok() { echo "PASS $1"; passed=$((passed + 1)); }
bad() { echo "FAIL $1"; shift; for line in "$@"; do echo "    $line"; done; failed=$((failed + 1)); }

# run NAME EXPECTED_CODE LOGFILE -- command...   (a 300 s limit: a hang is a failure)
run() {
  local name=$1 code=$2 log=$3
  shift 4
  timeout 300 "$@" >"$log" 2>&1
  local rc=$?
  if [ "$rc" = 124 ]; then bad "$name" "timed out (a hang)"; tail -5 "$log"; return 1; fi
  if [ "$code" = nonzero ] && [ "$rc" != 0 ]; then ok "$name"; return 0; fi
  if [ "$rc" != "$code" ]; then bad "$name" "exit $rc, expected $code"; tail -15 "$log" | sed 's/^/    /'; return 1; fi
  ok "$name"
}

expect_in() { # NAME FILE REGEX
  if grep -qE -e "$3" "$2"; then ok "$1"; else bad "$1" "no /$3/ in $2:"; tail -15 "$2" | sed 's/^/    /'; fi
}

finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" = 0 ]
}
