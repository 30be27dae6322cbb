#!/usr/bin/env bash
# The Python package: install what is missing, build and install ./python into the current
# Python (CPU path; FUSEDLOSS_PY_CUDA=1 adds the CUDA path), run its pytest suite.
# Usage: bash scripts/test-python.sh [pytest args...]   Environment: PYTHON (default python3).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

missing=()
for pair in torch:torch nanobind:nanobind scikit_build_core:scikit-build-core pytest:pytest numpy:numpy; do
  "$python" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
done
command -v cmake >/dev/null || missing+=(cmake)
if ((${#missing[@]})); then
  echo "test-python: installing ${missing[*]}" >&2
  "$python" -m pip install -q "${missing[@]}"
fi

# No build isolation: the build tools above are used as installed, offline; the CMake build
# directory is python/build (git-ignored), so rebuilds are incremental.
"$python" -m pip install -q --no-build-isolation "$repo/python"

# From the repo root, so the source tree's python/fusedloss (no extension) cannot shadow the install.
cd "$repo"
status=0
"$python" -m pytest -q -p no:cacheprovider python/tests "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "test-python: no tests were collected" >&2
  exit 1
fi
exit "$status"
