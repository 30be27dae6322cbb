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

# With nvcc, the static kernel check (tests/static/check_kernels.py: spills, 128-bit accesses)
# reads the sm_90 SASS with cuobjdump/nvdisasm. Toolkits installed without them get NVIDIA's PyPI
# wheels of the same major version (they read older minor versions' objects); CMake finds them in
# the Python environment (tests/CMakeLists.txt). Where that environment is not writable (PEP 668)
# they go to a private pip target that CMake also searches (scripts/find_cuda_tool.py).
cuda_tools_target=${XDG_CACHE_HOME:-$HOME/.cache}/fusedloss/cuda-tools
if command -v nvcc >/dev/null && ! command -v cuobjdump >/dev/null; then
  if ! python3 "$repo/scripts/find_cuda_tool.py" cuobjdump >/dev/null 2>&1; then
    cuda_major=$(nvcc --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
    wheels=("nvidia-cuda-cuobjdump==${cuda_major}.*" "nvidia-cuda-nvdisasm==${cuda_major}.*")
    echo "setup: installing ${wheels[*]} (pip) for the static kernel check" >&2
    python3 -m pip --version >/dev/null 2>&1 || {
      sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
      DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq python3-pip >/dev/null
    }
    python3 -m pip install -q "${wheels[@]}" 2>/dev/null ||
      python3 -m pip install -q --target "$cuda_tools_target" "${wheels[@]}" ||
      echo "setup: warning: could not install cuobjdump; the static kernel check will be skipped" >&2
  fi
fi
if [ "${CI:-}" = "true" ]; then default_archs=90; else default_archs="80;90"; fi
cmake -S "$repo" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-$default_archs}" "$@" >/dev/null
cmake --build "$build_dir" -j"$(nproc)"
