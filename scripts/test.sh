#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite twice: the Release build, then
# an AddressSanitizer + UndefinedBehaviorSanitizer build (build-asan/). Ends with ctest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

scripts/setup.sh
echo "== Release suite"
(cd build && ctest --output-on-failure -j"$jobs")

if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  # No GPU in CI: this compiles every CUDA kernel with nvcc; the parity tests report "skipped".
  echo "== CUDA backend (compile; parity tests skip without a GPU)"
  NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DRECHUB_CUDA=ON -DCMAKE_CUDA_COMPILER="$NVCC" \
    -DRECHUB_BUILD_EXAMPLES=OFF -DRECHUB_BUILD_BENCHMARKS=OFF >/dev/null
  cmake --build build-cuda -j"$jobs" --target rechub_cuda test_cuda_parity test_cuda_ops
  (cd build-cuda && ctest --output-on-failure -R cuda)
fi

echo "== ASan + UBSan suite"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRECHUB_SANITIZE=ON -DRECHUB_BUILD_EXAMPLES=OFF \
  -DRECHUB_BUILD_BENCHMARKS=OFF -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" >/dev/null
cmake --build build-asan -j"$jobs"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --output-on-failure -j"$jobs" -LE no_sanitize)
