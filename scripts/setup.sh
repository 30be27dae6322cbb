#!/usr/bin/env bash
# Installs what the build needs (only what is missing), then configures and builds fusedloss.
# Usage: bash scripts/setup.sh [extra cmake args...]
# Environment: BUILD_DIR (default: build), CUDA_ARCHS (default: 80;90, or 90 when CI=true).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-$repo/build}

packages=(cmake g++ make libgtest-dev libgmock-dev libcli11-dev nlohmann-json3-dev python3-numpy libboost-context-dev libhwy-dev libopenblas-dev pkg-config)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The CUDA toolkit is optional: found at /usr/local/cuda it builds the GPU path too.
[ -x /usr/local/cuda/bin/nvcc ] && export PATH=/usr/local/cuda/bin:$PATH
if [ "${CI:-}" = "true" ]; then default_archs=90; else default_archs="80;90"; fi
cmake -S "$repo" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-$default_archs}" "$@" >/dev/null
cmake --build "$build_dir" -j"$(nproc)"
