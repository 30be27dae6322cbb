#!/usr/bin/env python3
"""PyTorch's linear + cross-entropy, F.cross_entropy(h @ W.T + b, y), forward + backward (grad of hidden,
weight and bias), eager and torch.compile, on the CPU: median time and peak extra memory of one call.
`fusedloss bench --loss linear_cross_entropy` runs it and shows its lines next to its own; it can run alone:

  python3 bench/peers/torch_linear_ce.py --shape 4096x1024x128256 --threads 2 --repeats 3

Peak extra memory: the process's peak resident set (VmHWM) during one call minus its resident set before it,
with the peak reset first (`echo 5 > /proc/self/clear_refs`, Linux >= 4.0) and glibc's free memory trimmed
(malloc_trim); inputs and the gradient buffers of a previous call are already resident, so what is counted is
what the call adds.
Output: one line per implementation, `torch_<mode> time_ms <t> peak_extra_bytes <b>`.
"""
import argparse
import gc
import statistics
import sys
import time


def rss_and_hwm():
    rss = hwm = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return rss, hwm


def malloc_trim():
    # Freed memory glibc keeps in its heap stays resident; trimming first makes "extra" mean allocated by the call.
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="4096x1024x128256", help="N x H x V")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", default="eager,compile")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    import torch
    import torch.nn.functional as F

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    N, H, V = (int(x) for x in a.shape.lower().split("x"))
    g = torch.Generator().manual_seed(a.seed)
    h = torch.randn(N, H, generator=g).requires_grad_()
    W = (torch.randn(V, H, generator=g) * (2.0 / H ** 0.5)).requires_grad_()
    b = (torch.rand(V, generator=g) * 2 - 1).requires_grad_()
    y = torch.randint(0, V, (N,), generator=g)

    def step(fn):
        h.grad = W.grad = b.grad = None
        loss = fn(h, W, b, y)
        loss.backward()
        return loss

    def eager(h, W, b, y):
        return F.cross_entropy(h @ W.T + b, y)

    for mode in a.modes.split(","):
        fn = eager if mode == "eager" else torch.compile(eager)
        try:
            step(fn)  # warm-up (compiles), leaves the gradient buffers allocated
            step(fn)
        except Exception as e:  # torch.compile needs a C++ compiler at run time
            print(f"torch_{mode} error {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        times, peaks = [], []
        for _ in range(a.repeats):
            gc.collect()
            malloc_trim()
            reset_peak()
            rss0, _ = rss_and_hwm()
            t0 = time.perf_counter()
            step(fn)
            t1 = time.perf_counter()
            _, hwm = rss_and_hwm()
            times.append((t1 - t0) * 1e3)
            peaks.append(hwm - rss0)
        print(f"torch_{mode} time_ms {statistics.median(times):.3f} peak_extra_bytes {max(peaks)}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
