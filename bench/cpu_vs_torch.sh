#!/usr/bin/env bash
# The CPU done-when table of issue 14 in one command: every default loss of `fusedloss bench`
# (mse, huber, bce_with_logits, cross_entropy) × {f32, bf16} at the bench's default CPU sizes, plus
# cross_entropy 512×32000 and 4096×32000, fused vs PyTorch eager forward+backward with the same
# threads, one run, with the run's copy bandwidth; then a check of the targets against that run:
#   * every case at least as fast as PyTorch eager (`vs torch` ≥ 1),
#   * mse, huber, bce_with_logits f32 at 2^22 elements at ≥ 0.7× the copy bandwidth.
#
# Usage: bash bench/cpu_vs_torch.sh [extra fusedloss bench args]
# Environment: THREADS (default 2), JSON (default bench/results/cpu-<host>-<date>.json),
#   LOSSES (default: the bench's defaults; `all` for every loss), BUILD_DIR (default build-bench).
# PyTorch comes from pip (`pip install torch --index-url https://download.pytorch.org/whl/cpu`);
# without it the torch column stays empty and the check says so. Run it on a quiet machine: the
# load average before and after is printed and stored next to the JSON (PyTorch's OpenMP threads
# lose whole scheduler ticks at their barriers when the cores are shared).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
threads=${THREADS:-2}
json=${JSON:-$repo/bench/results/cpu-$(hostname -s)-$(date +%Y-%m-%d-%H%M).json}
losses=${LOSSES:-mse,huber,bce_with_logits,cross_entropy}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
FUSEDLOSS_COMMIT=${FUSEDLOSS_COMMIT:-$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)} \
  bash "$repo/scripts/bench.sh" --device cpu --threads "$threads" --loss "$losses" --dtype f32,bf16 \
  --shapes 256x4096,64x32000,512x32000,4096x32000 --json "$json" "$@"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average (1, 5, 15 min): before $load_before, after $load_after"
echo "{\"load_before\": \"$load_before\", \"load_after\": \"$load_after\"}" >"${json%.json}.load.json"

python3 - "$json" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
fused = {}
torch = {}
for r in doc["results"]:
    key = (r["loss"], r["dtype"], "x".join(str(s) for s in r["shape"]))
    if r["impl"] == "fused":
        fused[key] = r
    elif r["impl"] == "torch_eager":
        torch[key] = r
fails = []
print(f"\n{'loss':16} {'dtype':5} {'size':>11} {'fused ms':>9} {'GB/s':>6} {'copy GB/s':>9} {'ratio':>6} {'torch ms':>9} {'vs torch':>8}")
for key, r in fused.items():
    t = torch.get(key)
    vs = t["median_ms"] / r["median_ms"] if t else None
    print(f"{key[0]:16} {key[1]:5} {key[2]:>11} {r['median_ms']:9.4f} {r['bandwidth_gbps']:6.1f} "
          f"{r['copy_bandwidth_gbps']:9.1f} {r['ratio_to_copy']:6.2f} "
          f"{t['median_ms'] if t else float('nan'):9.4f} {vs if vs else float('nan'):7.2f}x")
    if vs is None:
        fails.append(f"{key}: no PyTorch record (is torch importable by python3?)")
    elif vs < 1.0:
        fails.append(f"{key}: {vs:.2f}x PyTorch")
    if key[1] == "f32" and key[2] == str(1 << 22) and key[0] in ("mse", "huber", "bce_with_logits") \
            and r["ratio_to_copy"] < 0.7:
        fails.append(f"{key}: {r['ratio_to_copy']:.2f}x the copy bandwidth (target 0.7)")
print("\ncheck: " + ("all targets met" if not fails else "NOT met:\n  " + "\n  ".join(fails)))
EOF
