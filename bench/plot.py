#!/usr/bin/env python3
"""Plot fusedloss benchmark results: effective bandwidth vs size, one panel per loss.

Reads one or more JSON files written by `fusedloss bench --json` and/or
`bench/peers/torch_peers.py --json` (schema "fusedloss-bench/1") and writes a PNG:

  * one panel per loss, x = elements (log scale; row-wise losses are labelled N x C),
    y = effective bandwidth in GB/s (the bytes the fused call must move / median time);
  * one line per implementation (fused, unfused baseline, torch_eager, torch_compile, liger)
    and dtype (solid f32, dashed bf16, dotted f16);
  * the same run's copy bandwidth drawn in grey as the ceiling;
  * the fused call's bytes moved / the minimum it must move (right axis, purple x / + / tri) where the
    run counted them (the emulated device); where the file gives only the model (bytes moved =
    the minimum) the panel says so instead.

Usage:
  python3 bench/plot.py bench/results/h100.json bench/results/h100-torch.json -o bench/results/h100.png
  (Debian: the system python3 with python3-matplotlib; `/usr/bin/python3` if another python3 comes first)
"""
import argparse
import json
import math
import os
import sys

SCHEMA = "fusedloss-bench/1"
IMPL_STYLE = {  # colour, label
    "fused": ("#1f77b4", "fusedloss (fused)"),
    "unfused": ("#ff7f0e", "unfused baseline"),
    "torch_eager": ("#2ca02c", "PyTorch eager"),
    "torch_compile": ("#d62728", "torch.compile"),
    "liger": ("#9467bd", "Liger-Kernel"),
}
DTYPE_STYLE = {"f32": "-", "bf16": "--", "f16": ":"}
MARKERS = {"f32": "o", "bf16": "s", "f16": "^"}
TRAFFIC_MARKERS = {"f32": "x", "bf16": "+", "f16": "1"}


def load(paths):
    """Records from every file (the first occurrence of each loss/dtype/shape/impl wins)."""
    records, seen, runs = [], set(), []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            sys.exit(f"plot.py: error: {path}: {e}")
        if doc.get("schema") != SCHEMA:
            sys.exit(f"plot.py: error: {path}: not a {SCHEMA} file (schema {doc.get('schema')!r})")
        device = doc.get("device", {})
        runs.append((device.get("name", "?"), doc.get("date", "?"), doc.get("generator", "?")))
        for rec in doc.get("results", []):
            key = (rec["loss"], rec["dtype"], tuple(rec["shape"]), rec["impl"])
            if key in seen:
                continue
            seen.add(key)
            records.append(rec)
    return records, runs


def shape_label(shape):
    if len(shape) == 2:
        return f"{shape[0]}x{shape[1]}"
    n = shape[0]
    if n > 0 and n & (n - 1) == 0:
        return f"2^{int(math.log2(n))}"
    return str(n)


def draw_traffic(ax, recs, dtypes):
    """The fused call's bytes moved / minimum on a right-hand axis, where they were counted."""
    fused = [r for r in recs if r["impl"] == "fused" and "bytes_moved_to_minimum" in r]
    measured = [r for r in fused if r.get("bytes_moved_source", "").startswith("measured")]
    if not measured:
        if fused:
            ax.text(0.01, 0.01, "bytes moved: model (= the minimum), not counted on this device",
                    transform=ax.transAxes, fontsize=6, color="0.4")
        return
    right = ax.twinx()
    top = 0.0
    for dtype in dtypes:
        pts = sorted((r["elements"], r["bytes_moved_to_minimum"]) for r in measured if r["dtype"] == dtype)
        if not pts:
            continue
        top = max(top, max(p[1] for p in pts))
        right.plot([p[0] for p in pts], [p[1] for p in pts], color="#9467bd", linestyle="none",
                   marker=TRAFFIC_MARKERS.get(dtype, "x"), markersize=7, label=f"bytes moved / minimum {dtype} (counted)")
    right.axhline(1.0, color="#9467bd", linestyle=":", linewidth=1, alpha=0.6)
    right.set_ylim(0, max(2.2, 1.15 * top))
    right.set_ylabel("bytes moved / minimum (emulated-device count)", color="#9467bd", fontsize=8)
    right.tick_params(axis="y", colors="#9467bd", labelsize=7)
    right.legend(fontsize=7, loc="lower right")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", nargs="+", help="result files (fusedloss bench --json, torch_peers.py --json)")
    ap.add_argument("-o", "--out", help="output PNG (default: the first JSON with .png)")
    ap.add_argument("--loss", help="comma list of losses to plot (default: all present)")
    ap.add_argument("--dtype", help="comma list of dtypes to plot (default: all present)")
    ap.add_argument("--title", help="figure title (default: device and date)")
    args = ap.parse_args(argv)

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot.py: error: matplotlib is missing (Debian: apt-get install -y python3-matplotlib)")

    records, runs = load(args.json)
    if args.loss:
        wanted = set(args.loss.split(","))
        records = [r for r in records if r["loss"] in wanted]
    if args.dtype:
        wanted = set(args.dtype.split(","))
        records = [r for r in records if r["dtype"] in wanted]
    if not records:
        sys.exit("plot.py: error: no results to plot")

    losses = list(dict.fromkeys(r["loss"] for r in records))
    cols = min(3, len(losses))
    rows = math.ceil(len(losses) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.4 * rows), squeeze=False)

    for ax, loss in zip(axes.flat, losses):
        recs = [r for r in records if r["loss"] == loss]
        dtypes = list(dict.fromkeys(r["dtype"] for r in recs))
        ticks = {}
        # Copy ceiling first (grey), then the implementations.
        for impl in ["copy"] + [i for i in IMPL_STYLE if any(r["impl"] == i for r in recs)]:
            for dtype in dtypes:
                pts = sorted((r["elements"], r["bandwidth_gbps"], tuple(r["shape"]))
                             for r in recs if r["impl"] == impl and r["dtype"] == dtype)
                if not pts:
                    continue
                xs = [p[0] for p in pts]
                ys = [p[1] for p in pts]
                for p in pts:
                    ticks[p[0]] = shape_label(p[2])
                if impl == "copy":
                    ax.plot(xs, ys, color="0.55", linestyle=DTYPE_STYLE.get(dtype, "-"), linewidth=2.5, alpha=0.6,
                            label=f"copy ceiling ({dtype})")
                else:
                    colour, name = IMPL_STYLE[impl]
                    ax.plot(xs, ys, color=colour, linestyle=DTYPE_STYLE.get(dtype, "-"),
                            marker=MARKERS.get(dtype, "o"), markersize=4, label=f"{name} {dtype}")
        draw_traffic(ax, recs, dtypes)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(ticks))
        ax.set_xticklabels([ticks[t] for t in sorted(ticks)], rotation=30, ha="right", fontsize=8)
        ax.minorticks_off()
        ax.set_title(loss)
        ax.set_xlabel("size (elements; N x C for row-wise losses)")
        ax.set_ylabel("effective bandwidth (GB/s)")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(losses):]:
        ax.set_visible(False)

    devices = sorted({r[0] for r in runs})
    dates = sorted({r[1] for r in runs})
    title = args.title or f"fusedloss bench — {', '.join(devices)} — {dates[-1] if dates else ''}"
    fig.suptitle(title)
    fig.tight_layout()
    out = args.out or os.path.splitext(args.json[0])[0] + ".png"
    fig.savefig(out, dpi=110)
    print(f"plot.py: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
