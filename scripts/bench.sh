#!/usr/bin/env bash
# Quick start #1: set up, build, and run the main job — the loss benchmark on the default
# backend (the GPU when one is present, else the CPU path). Extra arguments go to `fusedloss bench`.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-$repo/build}
bash "$repo/scripts/setup.sh"
exec "$build_dir/fusedloss" bench "$@"
