# A thin wrapper over CMake: installs missing system packages, configures, builds, runs.
#
#   make demo      the main job on the embedded default (2 CPU ranks)
#   make demo-seg  lung/heart U-Net segmentation on synthetic data (2 CPU ranks)
#   make test      build and run the test suite (ctest)
#   make bench     build and run the benchmarks (results: docs/PERFORMANCE.md)
#   make asan      build and run the unit tests under AddressSanitizer + UBSan
#
# BUILD (default build) and JOBS (default: all cores) can be overridden.

BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=
MPIRUN_ENV := OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1

.PHONY: all deps test-deps configure build demo demo-seg test bench asan format clean

all: build

deps:
	@scripts/install-deps.sh

test-deps:
	@scripts/install-deps.sh --test

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

configure: deps $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	scripts/demo.sh $(BUILD)

demo-seg: build
	scripts/demo-seg.sh $(BUILD)

test: test-deps build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

bench: build
	bench/run.sh $(BUILD)

asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMEDTRAIN_SANITIZE=ON -DMEDTRAIN_CUDA=OFF \
	  -DMEDTRAIN_BUILD_BENCH=OFF $(CMAKE_FLAGS)
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j $(JOBS)

format:
	clang-format -i $$(git ls-files '*.c' '*.h' '*.cpp' '*.cu')

clean:
	rm -rf $(BUILD) build-asan
