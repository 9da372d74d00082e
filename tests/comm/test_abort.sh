#!/bin/sh
# One rank's mt_comm_abort() ends the whole job with its message, never a hang.
# Usage: test_abort.sh MPIEXEC ABORT_PROG
# Each case runs under `timeout 60`: exit status 124 means the job hung, and the test fails.
set -u
mpiexec=$1
prog=$2
message="disk quota exceeded writing ckpt/step_7 (abort test 9f3c)"
failures=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# expect NAME WANT_PREFIX COMMAND...: the command must end in time, non-zero, printing
# "medtrain: <WANT_PREFIX> (host ...): <message>".
expect() {
    name=$1
    prefix=$2
    shift 2
    timeout -k 10 60 "$@" >"$out" 2>&1
    rc=$?
    sed "s/^/    /" "$out"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "FAIL $name: still running after 60 s (hang)"
        failures=$((failures + 1))
    elif [ "$rc" -eq 0 ]; then
        echo "FAIL $name: exit status 0, expected a failure"
        failures=$((failures + 1))
    elif ! grep -q "medtrain: $prefix (host [^)]*): $message" "$out"; then
        echo "FAIL $name: exit status $rc, but the abort message is missing"
        failures=$((failures + 1))
    else
        echo "PASS $name (exit status $rc)"
    fi
}

expect abort_ranks "rank 1" "$mpiexec" -n 2 "$prog" ranks
expect abort_singleton "rank 0" "$prog" single
expect abort_no_mpi "rank 0" "$prog" no-mpi

[ "$failures" -eq 0 ]
