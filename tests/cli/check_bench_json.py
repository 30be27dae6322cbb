#!/usr/bin/env python3
"""Checks a `fusedloss bench --json` file from the emulated device (tests/CMakeLists.txt):
every fused record carries the bytes one call moved, counted by the emulated device, and they
are within [1, max_ratio] × the minimum the case must move.

  check_bench_json.py bench.json [--max-ratio 1.05] [--expect N]
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    ap.add_argument("--max-ratio", type=float, default=1.05)
    ap.add_argument("--expect", type=int, help="number of fused records")
    a = ap.parse_args()
    with open(a.json, encoding="utf-8") as f:
        doc = json.load(f)
    fused = [r for r in doc["results"] if r["impl"] == "fused"]
    bad = []
    for r in fused:
        name = "%s %s %s" % (r["loss"], r["dtype"], "x".join(map(str, r["shape"])))
        ratio = r.get("bytes_moved_to_minimum")
        source = r.get("bytes_moved_source", "")
        print("%-36s moved %12.0f B  minimum %12.0f B  ratio %.4f  (%s)" % (name, r.get("bytes_moved", 0), r["bytes"],
                                                                          ratio or 0, source))
        if not source.startswith("measured"):
            bad.append(name + ": not counted")
        elif not (0.999 <= ratio <= a.max_ratio):
            bad.append("%s: bytes moved / minimum %.4f outside [1, %g]" % (name, ratio, a.max_ratio))
        elif abs(r["bytes_read"] + r["bytes_written"] - r["bytes_moved"]) > 0.5:
            bad.append(name + ": bytes_read + bytes_written != bytes_moved")
    if a.expect is not None and len(fused) != a.expect:
        bad.append("%d fused records, expected %d" % (len(fused), a.expect))
    for b in bad:
        print("FAIL: " + b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
