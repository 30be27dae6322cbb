#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/*.cpp) with clang + ASan + UBSan and runs each for a
# CI-sized time, starting from the committed seed corpus (fuzz/corpus/<harness>/, never modified:
# new inputs go to a scratch copy). Fails on any crash, sanitizer report or harness trap.
#
#   bash scripts/fuzz.sh                 # every harness, FUZZ_SECONDS each (default 30)
#   bash scripts/fuzz.sh fuzz_npy        # one harness
# Environment: FUZZ_SECONDS (default 30), FUZZ_BUILD_DIR (default build-fuzz), FUZZ_CXX (default:
# clang++-14, else clang++). Needs clang and the libFuzzer runtime (Debian clang-14 and
# libclang-rt-14-dev; installed here when missing and apt-get is usable).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${FUZZ_BUILD_DIR:-$repo/build-fuzz}
seconds=${FUZZ_SECONDS:-30}
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(fuzz_validate fuzz_npy)

pick_cxx() {
  if [ -n "${FUZZ_CXX:-}" ]; then echo "$FUZZ_CXX"; return; fi
  for c in clang++-14 clang++; do command -v "$c" >/dev/null 2>&1 && { echo "$c"; return; }; done
  echo ""
}
# A throw-away fuzzer: is the compiler there, with its libFuzzer runtime?
can_fuzz() {
  local cxx=$1 probe
  [ -n "$cxx" ] || return 1
  probe=$(mktemp -d)
  printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long){return 0;}\n' >"$probe/p.cpp"
  "$cxx" -fsanitize=fuzzer,address,undefined "$probe/p.cpp" -o "$probe/p" >/dev/null 2>&1
  local rc=$?
  rm -rf "$probe"
  return $rc
}
cxx=$(pick_cxx)
if ! can_fuzz "$cxx"; then
  echo "fuzz: installing clang-14 libclang-rt-14-dev" >&2
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq clang-14 libclang-rt-14-dev >/dev/null
  cxx=$(pick_cxx)
  can_fuzz "$cxx" || { echo "fuzz: no working clang with libFuzzer" >&2; exit 1; }
fi

mkdir -p "$out/obj" "$out/artifacts"
flags=(-std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
       -DFUSEDLOSS_WITH_CUDA=0 -I"$repo/include" -I"$repo" -Wall -Wextra $(pkg-config --cflags openblas))
# Library sources: instrumented for coverage and sanitizers like the harness (no fuzzer main in them).
lib_flags=("${flags[@]/-fsanitize=fuzzer,address,undefined/-fsanitize=fuzzer-no-link,address,undefined}")

sources_of() {
  case "$1" in
    fuzz_validate) ls "$repo"/src/*.cpp "$repo"/cpu/*.cpp ;;
    fuzz_npy) echo "$repo/cli/npy.cpp" ;;
    *) echo "fuzz: unknown harness $1" >&2; return 1 ;;
  esac
}

start=$(date +%s)
for h in "${harnesses[@]}"; do
  srcs=$(sources_of "$h")
  objs=()
  for s in $srcs; do objs+=("$out/obj/$(echo "${s#"$repo"/}" | tr / _).o"); done
  # Compile the library objects in parallel (make-style: only when the source is newer).
  printf '%s\n' $srcs | xargs -P "$(nproc)" -I{} bash -c '
    src={}; obj="$0/obj/$(echo "${src#"$1"/}" | tr / _).o"
    if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find "$1/include" "$1/src" "$1/cpu" "$1/cli" -newer "$obj" -name "*.hpp" 2>/dev/null | head -1)" ]; then
      '"$cxx"' '"${lib_flags[*]}"' -c "$src" -o "$obj"
    fi' "$out" "$repo"
  "$cxx" "${flags[@]}" "$repo/fuzz/$h.cpp" "${objs[@]}" -o "$out/$h" -lhwy $(pkg-config --libs openblas) -lpthread
done
echo "fuzz: built ${harnesses[*]} with $cxx in $(( $(date +%s) - start )) s"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
total=0
for h in "${harnesses[@]}"; do
  work="$out/corpus/$h"
  rm -rf "$work"
  mkdir -p "$work"
  seeds="$repo/fuzz/corpus/$h"
  mkdir -p "$seeds"
  log="$out/$h.log"
  set +e
  "$out/$h" "$work" "$seeds" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
    -print_final_stats=1 -artifact_prefix="$out/artifacts/$h-" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}' | tail -1)
  execs=${execs:-0}
  total=$((total + execs))
  if [ $rc -ne 0 ]; then
    echo "fuzz: $h FAILED (exit $rc) after $execs executions; last lines of $log:" >&2
    tail -40 "$log" >&2
    ls "$out/artifacts/" | grep "^$h-" >&2 || true
    status=1
  else
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1)
    echo "fuzz: $h ok: $execs executions in ${seconds} s (${cov:-cov: ?}, corpus $(ls "$work" | wc -l) new + $(ls "$seeds" | wc -l) seeds)"
  fi
done
echo "fuzz: total executions $total"
exit $status
