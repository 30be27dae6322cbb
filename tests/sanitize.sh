#!/usr/bin/env bash
# Runs the GPU test binaries under NVIDIA compute-sanitizer — memcheck (--leak-check full
# --padding 512), racecheck, initcheck and synccheck — and fails on any report. Run it whenever a
# GPU is available; commit the summary it writes (tests/results/).
#
#   bash tests/sanitize.sh [--summary FILE] [BINARY ...]
#     BINARY   default: build/tests/fusedloss_cuda_tests
#     FILE     default: $SANITIZE_SUMMARY, else tests/results/compute-sanitizer.md
# Environment:
#   SANITIZE_TOOLS         default "memcheck racecheck initcheck synccheck"
#   SANITIZE_GTEST_FILTER  default: everything but the >2^31-element tests (17 GB under a
#                          sanitizer is hours) and the hard-coded 100-repeat loops over 2^24
#                          elements; those run in the normal suite. One tool takes minutes: run
#                          one per device call (SANITIZE_TOOLS=memcheck, ...).
#   FUSEDLOSS_RELIABILITY_REPEATS  default 3 here (the determinism test's 100 repeats, sanitized, is slow)
#   COMPUTE_SANITIZER      path of compute-sanitizer (default: PATH, then /usr/local/cuda)
#   SANITIZE_LOG_DIR       full tool logs (default: <first binary's folder>/sanitize-logs)
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
summary=${SANITIZE_SUMMARY:-$repo/tests/results/compute-sanitizer.md}
binaries=()
while [ $# -gt 0 ]; do
  case "$1" in
    --summary) summary=$2; shift 2 ;;
    --summary=*) summary=${1#*=}; shift ;;
    -h|--help) sed -n 2,16p "$0"; exit 0 ;;
    *) binaries+=("$1"); shift ;;
  esac
done
[ ${#binaries[@]} -gt 0 ] || binaries=("$repo/build/tests/fusedloss_cuda_tests")
tools=${SANITIZE_TOOLS:-memcheck racecheck initcheck synccheck}
filter=${SANITIZE_GTEST_FILTER:--*LargeIndex*:*MoreThan*:*HundredRuns*}
export FUSEDLOSS_RELIABILITY_REPEATS=${FUSEDLOSS_RELIABILITY_REPEATS:-3}

cs=${COMPUTE_SANITIZER:-}
if [ -z "$cs" ]; then
  for c in "$(command -v compute-sanitizer 2>/dev/null)" /usr/local/cuda/bin/compute-sanitizer \
           /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
    if [ -n "$c" ] && [ -x "$c" ]; then cs=$c; break; fi
  done
fi
if [ -z "$cs" ]; then
  echo "sanitize: compute-sanitizer not found (set COMPUTE_SANITIZER)" >&2
  exit 2
fi
for b in "${binaries[@]}"; do
  [ -x "$b" ] || { echo "sanitize: no test binary at $b (build first)" >&2; exit 2; }
done
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "sanitize: no GPU visible (nvidia-smi -L fails); nothing to check" >&2
  exit 2
fi

logdir=${SANITIZE_LOG_DIR:-$(dirname "${binaries[0]}")/sanitize-logs}  # full logs stay in the build tree
mkdir -p "$logdir"
device=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
version=$("$cs" --version 2>/dev/null | grep -i version | head -1)
{
  echo "# compute-sanitizer results"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- device: ${device:-unknown} (name, driver)"
  echo "- compute-sanitizer: ${version:-unknown}"
  echo "- gtest filter: \`$filter\`, FUSEDLOSS_RELIABILITY_REPEATS=$FUSEDLOSS_RELIABILITY_REPEATS"
  echo
  echo "| binary | tool | options | result | tests | wall |"
  echo "|---|---|---|---|---|---|"
} >"$summary.tmp"

failed=0
for b in "${binaries[@]}"; do
  for tool in $tools; do
    case "$tool" in
      memcheck) opts=(--tool memcheck --leak-check full --padding 512) ;;
      racecheck) opts=(--tool racecheck --racecheck-report all) ;;
      initcheck) opts=(--tool initcheck) ;;
      synccheck) opts=(--tool synccheck) ;;
      *) echo "sanitize: unknown tool $tool" >&2; exit 2 ;;
    esac
    log="$logdir/$(basename "$b")-$tool.log"
    echo "sanitize: $(basename "$b") under $tool ..."
    t0=$(date +%s)
    "$cs" "${opts[@]}" --error-exitcode 86 --print-limit 200 "$b" --gtest_filter="$filter" >"$log" 2>&1
    rc=$?
    wall=$(( $(date +%s) - t0 ))
    # The tool's own count: "ERROR SUMMARY: 0 errors" (memcheck/initcheck/synccheck) or
    # "RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)".
    summary_line=$(grep -E '(ERROR|RACECHECK) SUMMARY' "$log" | tail -1 | sed 's/^=* *//')
    clean=0
    if [ $rc -eq 0 ]; then
      case "$tool" in
        racecheck) echo "$summary_line" | grep -qE '^RACECHECK SUMMARY: 0 hazards' && clean=1 ;;
        *) echo "$summary_line" | grep -qE '^ERROR SUMMARY: 0 errors' && clean=1 ;;
      esac
    fi
    tests=$(grep -E '^\[  PASSED  \] [0-9]+ test' "$log" | tail -1 | grep -oE '[0-9]+ tests?')
    skipped=$(grep -E '^\[  SKIPPED \] [0-9]+ test' "$log" | tail -1 | grep -oE '[0-9]+')
    [ -n "$skipped" ] && tests="$tests passed, $skipped skipped"
    if [ $clean -eq 1 ]; then
      result="clean ($summary_line)"
    else
      result="**FAILED** (exit $rc; ${summary_line:-no summary line})"
      failed=1
      echo "sanitize: $(basename "$b") $tool FAILED (exit $rc) — see $log" >&2
      grep -E '^========= (Invalid|Program hit|Race|Uninitialized|Barrier|Leaked|Error)' "$log" | head -20 >&2
      grep -E '^\[  FAILED  \]' "$log" | head -20 >&2
    fi
    echo "| $(basename "$b") | $tool | ${opts[*]:2} | $result | ${tests:-?} | ${wall} s |" >>"$summary.tmp"
  done
done
mv "$summary.tmp" "$summary"
echo "sanitize: summary written to $summary"
cat "$summary"
exit $failed
