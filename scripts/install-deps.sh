#!/usr/bin/env bash
# Installs what medtrain needs to build and test, and nothing when it is all there already.
#
#   scripts/install-deps.sh          build and run: compilers, CMake, Open MPI, parallel HDF5, GDCM,
#                                    OpenBLAS, libyaml, cJSON, OpenSSL, libpng, libjpeg-turbo
#   scripts/install-deps.sh --test   also what the tests use: Slurm + munge, HDF5 tools, Python venv
#   scripts/install-deps.sh --check  only report what is missing (exit 1 if anything is)
#
# On Debian/Ubuntu, as root, missing packages are installed with apt-get. Elsewhere (or without
# root) it prints what is missing, with the Spack spec or environment module that provides it on
# an HPC system, and exits non-zero.
set -euo pipefail

want_test=0
check_only=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    --check) check_only=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "install-deps.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

# Debian package | Spack spec or module | what it is for
build_pkgs=(
  "build-essential|gcc|C/C++ compilers"
  "cmake|cmake@3.25:|build system"
  "pkg-config|pkgconf|finding libraries"
  "git|git|recording the commit of a build"
  "openmpi-bin|openmpi|mpirun"
  "libopenmpi-dev|openmpi|MPI headers and libraries"
  "libhdf5-openmpi-dev|hdf5+mpi|parallel HDF5"
  "libgdcm-dev|gdcm|DICOM decoding"
  "libgdcm-tools|gdcm|DICOM tools (gdcmconv) for tests"
  "libopenblas-dev|openblas|BLAS"
  "libyaml-dev|libyaml|YAML job files"
  "libcjson-dev|cjson|JSON"
  "libssl-dev|openssl|SHA-256 and HMAC"
  "libpng-dev|libpng|PNG images and masks"
  "libjpeg-dev|libjpeg-turbo|JPEG images"
  "zlib1g-dev|zlib|deflated DICOM data sets"
)
test_pkgs=(
  "slurm-wlm|slurm|a real single-node Slurm for the Slurm tests"
  "munge|munge|Slurm authentication"
  "hdf5-tools|hdf5|h5dump for pack tests"
  "python3-venv|python|virtual environments for oracle scripts"
  "python3-pip|py-pip|fetching test data and oracle packages from PyPI"
  "gnuplot-nox|gnuplot|ROC plots from medtrain eval (optional at run time)"
)

pkgs=("${build_pkgs[@]}")
[ "$want_test" = 1 ] && pkgs+=("${test_pkgs[@]}")

is_debian=0
if [ -r /etc/os-release ] && grep -qiE '^(ID|ID_LIKE)=.*(debian|ubuntu)' /etc/os-release; then
  is_debian=1
fi

missing=()
if [ "$is_debian" = 1 ]; then
  for entry in "${pkgs[@]}"; do
    name=${entry%%|*}
    if ! dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$entry")
    fi
  done
else
  # Not Debian: look for the commands and headers instead, and name the Spack/module equivalents.
  probe() { command -v "$1" >/dev/null 2>&1; }
  probe cc || missing+=("${build_pkgs[0]}")
  probe cmake || missing+=("${build_pkgs[1]}")
  probe mpicc || missing+=("${build_pkgs[5]}")
  probe h5pcc || missing+=("${build_pkgs[6]}")
  missing+=("(also check)|gdcm openblas libyaml cjson openssl libpng libjpeg-turbo|libraries")
fi

if [ "${#missing[@]}" = 0 ]; then
  echo "install-deps: all $([ "$want_test" = 1 ] && echo "build and test" || echo build) dependencies are installed"
  exit 0
fi

print_missing() {
  echo "install-deps: missing:" >&2
  for entry in "${missing[@]}"; do
    IFS='|' read -r deb spack why <<<"$entry"
    printf '  %-22s (spack: %-16s) %s\n' "$deb" "$spack" "$why" >&2
  done
}

if [ "$check_only" = 1 ] || [ "$is_debian" = 0 ]; then
  print_missing
  if [ "$is_debian" = 0 ]; then
    echo "install-deps: not a Debian/Ubuntu system: install the above with your package manager," >&2
    echo "  or on a cluster: spack install <spec> / module load <name> (e.g. module load openmpi hdf5/parallel)." >&2
  fi
  exit 1
fi

if [ "$(id -u)" != 0 ]; then
  print_missing
  echo "install-deps: run as root (sudo $0 $*) to install them with apt-get." >&2
  exit 1
fi

names=()
for entry in "${missing[@]}"; do names+=("${entry%%|*}"); done
echo "install-deps: installing ${names[*]}"
export DEBIAN_FRONTEND=noninteractive
# A package list older than a day may name versions the mirror no longer has.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -n 1)" ]; then
  apt-get update -qq
fi
apt-get install -y -qq --no-install-recommends "${names[@]}" >/dev/null
echo "install-deps: done"
