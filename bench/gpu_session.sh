#!/usr/bin/env bash
# One-stop runbook for a session that is lent a GPU (the device tool). The build is made on the
# developer machine and carried over, so the GPU machine needs nothing but its driver:
#
#   here:   CUDA_ARCHS=90 BUILD_DIR=build-gpu bash scripts/setup.sh
#           strip build-gpu/tests/fusedloss_cuda_tests build-gpu/fusedloss
#           du -ch build-gpu/tests/fusedloss_cuda_tests build-gpu/fusedloss   # carry limit: 64 MiB
#   device: bash bench/gpu_session.sh STAGE [ARG]
#           (carry: build-gpu/tests/fusedloss_cuda_tests and build-gpu/fusedloss, not the folder)
#
# Each stage is meant for one 10-minute device call and writes its results under $OUT (or ./out);
# the exit status is the stage's own (a failing test binary fails the call):
#   tests [FILTER]   the CUDA test binary (GPU vs CPU, determinism, graphs, 64-bit indexing), with
#                    an optional gtest filter to split it over two calls, e.g. 'RowwiseCuda.*' and
#                    '-RowwiseCuda.*'; then the CLI's validate on five shapes
#   sanitize [TOOL]  tests/sanitize.sh with one compute-sanitizer tool (default memcheck; then
#                    racecheck, initcheck, synccheck in later calls)
#   bench            `fusedloss bench --loss all` (elementwise 2^20..2^28, cross_entropy shapes) → JSON
#   peers            bench/peers/torch_peers.py (PyTorch eager / torch.compile) → JSON, then the plot
# Commit what comes back under bench/results/ (device, driver, commit and command are in the JSON).
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$repo/build-gpu}
out=${OUT:-$repo/out}
mkdir -p "$out"
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/device.txt" 2>&1
case "${1:-}" in
  tests)
    "$build/tests/fusedloss_cuda_tests" --gtest_brief=1 --gtest_filter="${2:-*}" 2>&1 | tee "$out/cuda-tests.log" | tail -40
    rc=${PIPESTATUS[0]}
    for spec in "huber f32 1000003" "bce_with_logits bf16 1000003" "cross_entropy bf16 4096x32000" \
                "cross_entropy f32 1024x131072" "kl_div_logits f16 512x50257"; do
      set -- $spec
      "$build/fusedloss" validate --loss "$1" --dtype "$2" --shape "$3" 2>&1 | tee -a "$out/validate.log"
      [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
    done
    exit "$rc" ;;
  sanitize)
    SANITIZE_TOOLS="${2:-memcheck}" SANITIZE_SUMMARY="$out/compute-sanitizer-${2:-memcheck}.md" \
      bash "$repo/tests/sanitize.sh" "$build/tests/fusedloss_cuda_tests" ;;
  bench)
    "$build/fusedloss" bench --loss all --commit "$commit" --json "$out/bench.json" | tee "$out/bench.txt" ;;
  peers)
    python3 "$repo/bench/peers/torch_peers.py" --commit "$commit" --json "$out/torch.json" | tee "$out/torch.txt"
    [ -f "$out/bench.json" ] && python3 "$repo/bench/plot.py" "$out/bench.json" "$out/torch.json" -o "$out/bench.png" ;;
  *) sed -n 2,22p "$0"; exit 2 ;;
esac
