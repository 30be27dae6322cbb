#!/usr/bin/env bash
# Checks that the emulated device's seams in the kernel source compile, under nvcc, to exactly the
# code they replaced: builds a few kernels (cluster mode with DSMEM and the compiler barriers,
# block mode with softcap and smoothing, the reductions with FUSEDLOSS_SHARED arrays) for sm_90
# from the headers of a base revision and of the working tree, and compares their SASS.
#   bash sim/tests/seams_sass.sh [BASE_REV]      (default: b8203a0, the last commit before the seams)
# Needs nvcc and cuobjdump + nvdisasm (PyPI: nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
base=${1:-b8203a0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/base" "$work/head"
git -C "$repo" archive "$base" include | tar -x -C "$work/base"
cp -r "$repo/include" "$work/head/"
cat >"$work/k.cu" <<'CU'
#include "fusedloss/cuda/rowwise_kernels.cuh"
namespace rw = fusedloss::cuda::rowwise;
template __global__ void rw::sparse_ce_regs_kernel<__nv_bfloat16, 8, 8, rw::kCluster, false, 0>(const rw::RowArgs);
template __global__ void rw::sparse_ce_regs_kernel<float, 4, 8, rw::kBlock, true, 1>(const rw::RowArgs);
CU
cuobjdump=$(command -v cuobjdump || python3 -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13/bin/cuobjdump"))')
export PATH=$(dirname "$cuobjdump"):$PATH
for v in base head; do
  /usr/local/cuda/bin/nvcc -std=c++17 -arch=sm_90 -cubin --expt-relaxed-constexpr -I"$work/$v/include" \
    -o "$work/$v.cubin" "$work/k.cu"
  "$cuobjdump" -sass "$work/$v.cubin" >"$work/$v.sass"
done
functions=$(grep -c 'Function :' "$work/head.sass")
if cmp -s "$work/base.sass" "$work/head.sass"; then
  echo "seams_sass: SASS identical for $functions kernels ($(wc -l <"$work/head.sass") lines) against $base"
else
  diff "$work/base.sass" "$work/head.sass" | head -40
  echo "seams_sass: SASS differs from $base" >&2
  exit 1
fi
