#!/usr/bin/env bash
# The GPU test suite without a GPU: builds the CUDA path for the emulated device (sim/; host
# compiler, no nvcc) in build-emulated/ and runs, through ctest, every test of tests/cuda, the
# emulated device's own tests (each checker on a broken kernel) and `fusedloss validate`; then the
# determinism, graph and stream tests again under each other scheduling order, whose outputs must
# be the same bits.
#   bash scripts/emulated.sh
# Environment: EMULATED_BUILD_DIR (default build-emulated), EMULATED_SCHEDULES (default
# "warp-greedy reversed random:7"; "" skips the re-runs).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${EMULATED_BUILD_DIR:-$repo/build-emulated}
t0=$(date +%s)
BUILD_DIR=$build_dir bash "$repo/scripts/setup.sh" -DFUSEDLOSS_DEVICE=emulated -DFUSEDLOSS_BUILD_EXAMPLES=OFF
t1=$(date +%s)
echo "emulated: built in $((t1 - t0)) s"
cd "$build_dir"
ctest --output-on-failure -j"$(nproc)" --timeout 1500 -L emulated
t2=$(date +%s)
echo "emulated: ctest (round-robin schedule) passed in $((t2 - t1)) s"

# The tests whose point is run-to-run identity, under the other orders of blocks and threads (one
# process per order, as many at once as there are cores).
filter='ElementwiseCuda.HundredRuns*:ElementwiseCuda.ResultDoesNotDependOnGridSize:ElementwiseCuda.Graph*'
filter+=':RowwiseCuda.*:ReliabilityCuda.Determin*:ReliabilityCuda.FourHost*:ReliabilityCuda.GraphCapture*'
filter+=':ReliabilityCuda.InPlaceEquals*:RowwiseSchedules.*:ElementwiseSchedules.*:All/LinearCeCuda.BitwiseReproducible*'
schedules=${EMULATED_SCHEDULES-warp-greedy reversed random:7}
if [ -n "$schedules" ]; then
  export filter
  printf '%s\n' $schedules | xargs -P "$(nproc)" -I{} bash -c \
    'FUSEDLOSS_SIM_SCHEDULE={} ./tests/fusedloss_cuda_tests --gtest_filter="$filter" --gtest_brief=1 >"schedule-{}.log" 2>&1' ||
    true
  for schedule in $schedules; do
    if ! grep -qE '^\[  PASSED  \]' "schedule-$schedule.log" || grep -qE '^\[  FAILED  \]' "schedule-$schedule.log"; then
      cat "schedule-$schedule.log"
      echo "emulated: FAILED under schedule $schedule" >&2
      exit 1
    fi
    echo "emulated: schedule $schedule: $(grep -E '^\[  PASSED  \]' "schedule-$schedule.log")"
  done
fi
echo "emulated: done in $(( $(date +%s) - t0 )) s"
