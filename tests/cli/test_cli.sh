#!/usr/bin/env bash
# The medtrain command line: exit codes (0 ok, 1 failure, 2 usage), help, version, and doctor
# under 1 and 2 ranks, including a failing check that must end every rank with the message.
#   test_cli.sh MEDTRAIN MPIEXEC
set -u
medtrain=$1
mpiexec=$2
passed=0
failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# expect NAME CODE PATTERN -- command...: runs the command (60 s limit), checks its exit code and
# that its output (stdout+stderr) matches the extended regex PATTERN.
expect() {
  local name=$1 code=$2 pattern=$3
  shift 4
  timeout 120 "$@" >"$tmp/out" 2>&1
  local rc=$?
  if [ "$rc" = 124 ]; then
    echo "FAIL $name: timed out (a hang)"; failed=$((failed + 1)); return
  fi
  if [ "$rc" != "$code" ]; then
    echo "FAIL $name: exit $rc, expected $code"; sed 's/^/    /' "$tmp/out" | tail -20; failed=$((failed + 1)); return
  fi
  if ! grep -qE -e "$pattern" "$tmp/out"; then
    echo "FAIL $name: output lacks /$pattern/"; sed 's/^/    /' "$tmp/out" | tail -20; failed=$((failed + 1)); return
  fi
  echo "PASS $name"; passed=$((passed + 1))
}

expect version 0 'medtrain [0-9]+\.[0-9]+\.[0-9]+ \(commit' -- "$medtrain" version
expect version_libs 0 'HDF5: +1\.[0-9.]+ \(parallel\)' -- "$medtrain" version
expect version_flag 0 'GDCM: +[0-9]' -- "$medtrain" --version
expect no_command 2 'usage: medtrain' -- "$medtrain"
expect unknown_command 2 "unknown command 'frobnicate'" -- "$medtrain" frobnicate
expect help 0 'doctor' -- "$medtrain" --help
expect help_command 0 'usage: medtrain doctor' -- "$medtrain" help doctor
expect doctor_help 0 '--scratch DIR' -- "$medtrain" doctor --help
expect doctor_bad_option 2 "unknown option '--bogus'" -- "$medtrain" doctor --bogus
expect doctor_bad_value 2 '--gemm 7: expected 16..16384' -- "$medtrain" doctor --gemm 7
expect bad_log_level 2 "log level 'loud'" -- "$medtrain" --log-level loud version
expect version_extra_arg 2 'takes no arguments' -- "$medtrain" version extra

expect doctor_singleton 0 'all checks passed' -- "$medtrain" doctor --scratch "$tmp" --gemm 256 --allreduce-mib 4
expect doctor_2_ranks 0 '2 ranks on 1 host' -- "$mpiexec" -n 2 "$medtrain" doctor --scratch "$tmp" --gemm 256 --allreduce-mib 4
expect doctor_2_ranks_hdf5 0 'collective write and read-back' -- "$mpiexec" -n 2 "$medtrain" doctor --scratch "$tmp" --gemm 256 --allreduce-mib 4
# A scratch directory that does not exist: the HDF5 check fails on every rank, the job ends
# normally with exit 1, and the message names the check and the path.
expect doctor_failed_check 1 '1 check failed: hdf5' -- "$mpiexec" -n 2 "$medtrain" doctor --scratch "$tmp/missing" --gemm 256 --allreduce-mib 4
expect doctor_failed_path 1 "$tmp/missing" -- "$mpiexec" -n 2 "$medtrain" doctor --scratch "$tmp/missing" --gemm 256 --allreduce-mib 4
# Launcher and MPI disagreeing on the rank count is caught with a hint.
expect doctor_pmi_mismatch 1 'srun --mpi=pmix' -- env SLURM_NTASKS=4 "$medtrain" doctor --scratch "$tmp" --gemm 256 --allreduce-mib 4

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
