#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer build of everything CPU-side (the library, the CPU
# and API test suites, the reliability suite, the CLI and its tests, the examples), run through
# ctest; then the libFuzzer harnesses (scripts/fuzz.sh). Called by .ci/run after the main tests.
#
#   bash scripts/sanitize-cpu.sh
# Environment: ASAN_BUILD_DIR (default build-asan), FUZZ_SECONDS (default 30 per harness),
# SKIP_FUZZ=1 to leave the fuzzers out.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${ASAN_BUILD_DIR:-$repo/build-asan}
jobs=$(nproc)
t0=$(date +%s)

# FUSEDLOSS_SANITIZE adds -fsanitize=address,undefined -fno-sanitize-recover=all to every project
# target (cmake/FusedlossWarnings.cmake). No CUDA here: the sanitizers cover host code only.
# -O2 with line tables only (-g1): sanitizer reports name file:line, and the build stays quick.
cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" \
  -DFUSEDLOSS_SANITIZE=ON -DFUSEDLOSS_ENABLE_CUDA=OFF -DFUSEDLOSS_BUILD_CLI=ON -DFUSEDLOSS_BUILD_TESTS=ON >/dev/null
cmake --build "$build" -j"$jobs"
t1=$(date +%s)
echo "sanitize-cpu: built in $((t1 - t0)) s"

# Any report aborts the test (halt_on_error / -fno-sanitize-recover); leaks are reported too.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1:check_initialization_order=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# The package test installs the (sanitized, static) library and builds an unsanitized consumer
# against it, which cannot link the sanitizer runtime: it runs in the normal build only. The
# `large` tests (8.6 GB each) would double under ASan's shadow memory: normal build only too.
(cd "$build" && ctest --output-on-failure -j"$jobs" --timeout 1500 -LE "package|large")
t2=$(date +%s)
echo "sanitize-cpu: ctest under ASan+UBSan passed in $((t2 - t1)) s"

if [ "${SKIP_FUZZ:-0}" != "1" ]; then
  bash "$repo/scripts/fuzz.sh"
fi
echo "sanitize-cpu: done in $(( $(date +%s) - t0 )) s"
