#!/usr/bin/env bash
# Quick start #2: set up, build, and run the whole test suite: ctest in build/ (CPU path, CLI,
# examples, packaging; the GPU tests too where there is a GPU), the GPU suite on the emulated
# device (scripts/emulated.sh), then the Python package's pytest suite.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-$repo/build}
bash "$repo/scripts/setup.sh"
cd "$build_dir"
ctest --output-on-failure -j"$(nproc)" --timeout 1200
bash "$repo/scripts/emulated.sh"
bash "$repo/scripts/test-python.sh"
