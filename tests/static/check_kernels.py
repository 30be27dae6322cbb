#!/usr/bin/env python3
"""Static checks of the compiled kernels, from the real compiler's output (no GPU needed).

For every kernel built for one architecture (default sm_90) in a binary, object, library or
cubin, reads cuobjdump's resource usage (registers, stack frame, local memory) and SASS, and
fails when
  - a main kernel (row-wise regs/stream/nll/kl_div, elementwise) has a stack frame or local
    memory: a spill (ptxas spills to the stack frame) or a register array indexed at run time;
  - a vectorised main kernel (VEC > 1, or elementwise) has no 128-bit global load or no 128-bit
    global store (LDG.E.128 / STG.E.128, any cache qualifier) in its SASS.
Kernels listed in --allow (one demangled-name substring per line, '#' starts the reason) are
reported but do not fail: documented exceptions.

  tests/static/check_kernels.py build/libfusedloss.a [--arch sm_90] [--allow FILE] [--json]

cuobjdump: $CUOBJDUMP, else the one next to nvcc, else PATH.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

MAIN = re.compile(r"(regs_kernel|stream_kernel|nll_kernel|kl_div_kernel|elementwise_kernel)<")


def find_cuobjdump():
    for c in (os.environ.get("CUOBJDUMP"), shutil.which("cuobjdump"),
              os.path.join(os.path.dirname(shutil.which("nvcc") or ""), "cuobjdump")):
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    sys.exit("check_kernels: cuobjdump not found (set CUOBJDUMP)")


def demangle(names):
    if not names:
        return {}
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return dict(zip(names, out.splitlines()))


def arch_lines(cuobjdump, option, path, arch):
    """The lines of `cuobjdump option path` that belong to the ELF of `arch`."""
    text = subprocess.run([cuobjdump, option, path], capture_output=True, text=True, check=True).stdout
    current = arch if path.endswith(".cubin") else None  # a cubin is one ELF, not always labelled
    for line in text.splitlines():
        m = re.search(r"(?:arch =|code for) (sm_\d+a?)\b", line)
        if m:
            current = m.group(1)
        elif current == arch:
            yield line


def resource_usage(cuobjdump, path, arch):
    """{mangled: {REG, STACK, SHARED, LOCAL}}."""
    res, fn = {}, None
    for line in arch_lines(cuobjdump, "--dump-resource-usage", path, arch):
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            fn = m.group(1)
            res[fn] = {}
        if fn:  # the counts follow the name, on its line or the next
            res[fn].update({k: int(v) for k, v in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", line)})
    return res


def sass_vector_ops(cuobjdump, path, arch):
    """{mangled: [has LDG.*128, has STG.*128]}."""
    ops, fn = {}, None
    for line in arch_lines(cuobjdump, "--dump-sass", path, arch):
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            fn = m.group(1)
            ops[fn] = [False, False]
        elif fn:
            ops[fn][0] |= bool(re.search(r"\bLDG\.E[.\w]*\.128\b", line))
            ops[fn][1] |= bool(re.search(r"\bSTG\.E[.\w]*\.128\b", line))
    return ops


def template_args(name):
    """Top-level template arguments of the kernel: "k<float, 4, true>(...)" -> ["float", "4", "true"]."""
    start = name.find("<")
    args, depth, cur = [], 0, ""
    for ch in name[start + 1:]:
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            if depth == 0:
                break
            depth -= 1
        if ch == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return args + [cur.strip()]


def vector_accesses(name):
    """(needs a 128-bit load, needs a 128-bit store) of a main kernel's vector path.
    Row-wise <S, VEC, ...>: VEC > 1 loads and stores rows (nll reads one element per row, so it
    only stores). Elementwise <Op, S, kW, kGrad, Mode, kPosCol>: loads x, y always; stores the
    gradient (kGrad) or per-element losses (Mode 1)."""
    a = template_args(name)
    if "elementwise_kernel<" in name:
        return True, a[3] == "true" or a[4].endswith(")1")
    vec = len(a) > 1 and a[1].isdigit() and int(a[1]) > 1
    return vec and "nll_kernel<" not in name, vec


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--allow", help="documented exceptions: one kernel-name substring per line, '# reason'")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    allow = []
    if args.allow:
        with open(args.allow) as f:
            allow = [l.split("#")[0].strip() for l in f if l.split("#")[0].strip()]
    cuobjdump = find_cuobjdump()
    kernels = {}
    for b in args.binaries:
        res = resource_usage(cuobjdump, b, args.arch)
        ops = sass_vector_ops(cuobjdump, b, args.arch)
        names = demangle(sorted(res))
        for mangled, r in res.items():
            kernels[mangled] = dict(r, name=names.get(mangled, mangled), ldg128=ops.get(mangled, [False])[0],
                                    stg128=ops.get(mangled, [False, False])[1])
    failures, excused, rows = [], [], []
    for mangled, k in sorted(kernels.items(), key=lambda kv: kv[1]["name"]):
        problems = []
        main_kernel = bool(MAIN.search(k["name"]))
        if main_kernel and (k.get("STACK", 0) or k.get("LOCAL", 0)):
            problems.append("stack frame %d B, local %d B (spill or local array)" % (k.get("STACK", 0), k.get("LOCAL", 0)))
        if main_kernel:
            need_load, need_store = vector_accesses(k["name"])
            if need_load and not k["ldg128"]:
                problems.append("no 128-bit global load (LDG.E.128)")
            if need_store and not k["stg128"]:
                problems.append("no 128-bit global store (STG.E.128)")
        rows.append(dict(k, mangled=mangled, main=main_kernel, problems=problems))
        if problems:
            (excused if any(a in k["name"] for a in allow) else failures).append((k["name"], problems))
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print("%d kernels for %s (%d main); %d with a stack frame or local memory" % (
            len(rows), args.arch, sum(r["main"] for r in rows), sum(1 for r in rows if r.get("STACK", 0) or r.get("LOCAL", 0))))
        for r in rows:
            if r.get("STACK", 0) or r.get("LOCAL", 0) or r["problems"]:
                print("  REG %3d STACK %4d LOCAL %4d  LDG.128 %-5s STG.128 %-5s %s" % (
                    r.get("REG", 0), r.get("STACK", 0), r.get("LOCAL", 0), r["ldg128"], r["stg128"], r["name"]))
    for name, p in excused:
        print("documented exception: %s: %s" % (name, "; ".join(p)))
    for name, p in failures:
        print("FAIL: %s: %s" % (name, "; ".join(p)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
