#!/usr/bin/env bash
# Builds and runs tests/consumer against fusedloss as a downstream project would.
#   run_consumer_test.sh package BUILD_DIR        install BUILD_DIR to a temporary prefix, find_package it
#   run_consumer_test.sh fetchcontent SOURCE_DIR  pull the source tree in with FetchContent
set -euo pipefail
mode=$1
src_dir=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
args=(-DFUSEDLOSS_CONSUMER_MODE="$mode" -DCMAKE_BUILD_TYPE=Release)
if [ "$mode" = package ]; then
  cmake --install "$2" --prefix "$work/prefix" >/dev/null
  args+=(-DCMAKE_PREFIX_PATH="$work/prefix")
else
  args+=(-DFUSEDLOSS_SOURCE_DIR="$2")
fi
cmake -S "$src_dir" -B "$work/build" "${args[@]}" >/dev/null
cmake --build "$work/build" -j2 --target consumer >/dev/null
"$work/build/consumer"
