#!/usr/bin/env bash
# Quick start #1: set up, build, and run the main job — the loss benchmark on the default
# backend (the GPU when one is present, else the CPU path). Extra arguments go to `fusedloss bench`.
#
# It builds only what it runs: the library and the `fusedloss` program, in its own folder
# (BUILD_DIR, default build-bench; scripts/test.sh builds everything in build/). The CUDA path is
# compiled only when there is a GPU to run it, and then for that GPU's architecture alone
# (CUDA_ARCHS overrides); without a GPU the benchmark runs the CPU path, so nvcc is not needed.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export BUILD_DIR=${BUILD_DIR:-$repo/build-bench}

cmake_args=(-DFUSEDLOSS_BUILD_TESTS=OFF -DFUSEDLOSS_BUILD_EXAMPLES=OFF)
if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  cmake_args+=(-DFUSEDLOSS_ENABLE_CUDA=ON)
  # compute_cap "9.0" -> architecture 90; the first GPU is the one the benchmark uses.
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' .')
  [[ -z "${CUDA_ARCHS:-}" && "$cap" =~ ^[0-9]+$ ]] && export CUDA_ARCHS=$cap
else
  echo "bench: no GPU found: building the CPU path only (scripts/test.sh builds the CUDA path too)" >&2
  cmake_args+=(-DFUSEDLOSS_ENABLE_CUDA=OFF)
fi
bash "$repo/scripts/setup.sh" "${cmake_args[@]}"

"$BUILD_DIR/fusedloss" bench "$@"

# Where the results can go next: the JSON (--json FILE) and its plot.
json=""
for ((i = 1; i <= $#; i++)); do
  case "${!i}" in
    --json) j=$((i + 1)); json=${!j:-} ;;
    --json=*) json=${!i#--json=} ;;
  esac
done
if [ -z "$json" ]; then
  json=results.json
  echo "bench: to keep the results as JSON: bash scripts/bench.sh --json $json" >&2
fi
echo "bench: to plot them: /usr/bin/python3 bench/plot.py $json -o ${json%.json}.png   (Debian: python3-matplotlib)" >&2
