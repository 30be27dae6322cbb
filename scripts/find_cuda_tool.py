#!/usr/bin/env python3
"""Prints the directory of a CUDA binary tool (cuobjdump, nvdisasm) installed from NVIDIA's PyPI
wheels (nvidia-cuda-cuobjdump, nvidia-cuda-nvdisasm): in this Python's environment (the
namespace package `nvidia`, site or user site) or in the private pip target scripts/setup.sh
falls back to. Exit status 1 and no output when there is none.

  python3 scripts/find_cuda_tool.py cuobjdump
"""
import os
import sys


def candidate_dirs():
    roots = []
    try:
        import nvidia  # a namespace package: one entry per site directory that has it
        roots += list(nvidia.__path__)
    except ImportError:
        pass
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    roots.append(os.path.join(cache, "fusedloss", "cuda-tools", "nvidia"))
    for root in roots:
        if not os.path.isdir(root):
            continue
        for sub in sorted(os.listdir(root), reverse=True):  # cu13/bin (13.x wheels), cuda_cuobjdump/bin (12.x)
            yield os.path.join(root, sub, "bin")


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "cuobjdump"
    for d in candidate_dirs():
        if os.access(os.path.join(d, tool), os.X_OK):
            print(d)
            return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
