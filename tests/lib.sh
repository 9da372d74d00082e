# Shared by the end-to-end test scripts (source it): a scratch directory removed on exit, MPI
# settings for root and oversubscription, and PASS/FAIL bookkeeping.
#   ok NAME; bad NAME [DETAIL...]; run NAME CODE LOG -- CMD...  (CODE may be "nonzero");
#   expect_in NAME FILE REGEX; losses DIR; compare_losses NAME DIR1 DIR2 STEPS;
#   finish  (prints the counts; exit status 1 if anything failed)
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

# Training logs (a run directory's log.jsonl): losses DIR prints the step losses, one a line;
# compare_losses NAME DIR1 DIR2 STEPS passes when the first STEPS losses agree within 1e-5
# (relative).
losses() { grep -o '"loss":[^,}]*' "$1/log.jsonl" | cut -d: -f2; }
compare_losses() {
  if [ ! -f "$2/log.jsonl" ] || [ ! -f "$3/log.jsonl" ]; then bad "$1" "a log is missing"; return; fi
  paste <(losses "$2") <(losses "$3") | head -n "$4" >"$tmp/losses.txt"
  local n worst
  n=$(wc -l <"$tmp/losses.txt")
  worst=$(awk '{d = $1 - $2; if (d < 0) d = -d; r = d / ($2 < 0 ? -$2 : $2); if (r > m) m = r} END {printf "%.3g", m}' "$tmp/losses.txt")
  if [ "$n" = "$4" ] && awk -v w="$worst" 'BEGIN {exit !(w <= 1e-5)}'; then
    ok "$1 ($n steps, worst relative difference $worst)"
  else
    bad "$1" "$n steps compared, worst relative difference $worst"; sed 's/^/    /' "$tmp/losses.txt"
  fi
}

finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" = 0 ]
}
