#!/usr/bin/env python3
"""Time PyTorch (eager and torch.compile) and, when importable, Liger-Kernel on the losses and shapes
of `fusedloss bench`, forward + backward, and write JSON in the same schema ("fusedloss-bench/1").

On the CPU (`--device cpu --threads N`), `fusedloss bench --device cpu` runs it for each case and
shows the result as its `torch ms` column. On the GPU machine run it next to `fusedloss bench` so
the ratios come from one device and one run:

  build/fusedloss bench --json bench/results/h100.json --commit "$(git rev-parse HEAD)"
  python3 bench/peers/torch_peers.py --json bench/results/h100-torch.json --commit "$(git rev-parse HEAD)"
  python3 bench/plot.py bench/results/h100.json bench/results/h100-torch.json -o bench/results/h100.png

Method (the same as fusedloss bench, so the numbers compare):
  * each implementation computes the loss (the loss's default reduction: mean, batchmean for
    kl_div_logits) and the gradient w.r.t. the input (torch.autograd.grad), with no weights;
  * "bytes" is fusedloss's model of the traffic the fused call must move (x + y read, gradient
    written; cross_entropy: N*C read + N*C written + labels), so bandwidth_gbps is comparable
    across implementations even though the peers move more;
  * warm-up calls first (torch.compile compiles there), then `repeats` calls, each between its own
    pair of CUDA events; the median is reported;
  * buffer sets rotate until 4x the L2 size is touched, so small sizes are not served from L2;
  * before each batch of timed calls the GPU is held with torch.cuda._sleep so the host can enqueue
    ahead: events then measure device time, not Python/launch overhead (as fusedloss bench does);
  * the same run's device-to-device copy (Tensor.copy_) of bytes/2 gives the copy ceiling.
On the CPU each call is timed on its own with time.perf_counter, buffer sets rotate until twice the
last-level cache is touched (as fusedloss bench does), and torch uses --threads intra-op threads.
"""
import argparse
import datetime
import json
import math
import os
import shlex
import statistics
import sys
import time

SCHEMA = "fusedloss-bench/1"
ELEMENTWISE = ["mse", "mae", "rmse", "msle", "huber", "smooth_l1", "pseudo_huber", "log_cosh", "hinge",
               "squared_hinge", "bce", "bce_with_logits"]
ROWWISE = ["cross_entropy", "nll", "kl_div", "kl_div_logits"]
DEFAULT_LOSSES = ["mse", "huber", "bce_with_logits", "cross_entropy"]
DEFAULT_SIZES = ["2^20", "2^22", "2^24", "2^26", "2^28"]
DEFAULT_SHAPES = ["32768x4096", "32768x32768", "16384x128256", "8192x262144"]
DTYPE_BYTES = {"f32": 4, "f16": 2, "bf16": 2}
LABEL_BYTES = 8  # int64 labels, as fusedloss bench uses

# The fills of fusedloss bench (cli/bench_data.hpp): uniform ranges that keep each loss on its usual path.
INPUT_RANGE = {"msle": (0.0, 4.0), "bce": (0.01, 0.99), "bce_with_logits": (-4.0, 4.0), "nll": (-12.0, -0.1),
               "kl_div": (-12.0, -0.1), "cross_entropy": (-4.0, 4.0), "kl_div_logits": (-4.0, 4.0)}
TARGET_RANGE = {"msle": (0.0, 4.0), "bce": (0.0, 1.0), "bce_with_logits": (0.0, 1.0), "kl_div_logits": (-4.0, 4.0)}


def parse_size(text):
    text = text.strip().lower()
    if "^" in text:
        base, exp = text.split("^")
        return int(base) ** int(exp)
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1:], 1)
    return int(text[:-1] if mult != 1 else text) * mult


def parse_shape(text):
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) != 2:
        raise ValueError(f"shape {text!r} is not N x C")
    return parse_size(parts[0]), parse_size(parts[1])


def traffic_bytes(loss, dtype, shape):
    """fusedloss's bytes model (cli/bench.cpp traffic_bytes), for the default reductions."""
    e = DTYPE_BYTES[dtype]
    n = math.prod(shape)
    if loss in ELEMENTWISE:
        return 3.0 * n * e
    rows = shape[0]
    if loss == "cross_entropy":
        return 2.0 * n * e + rows * LABEL_BYTES
    if loss == "nll":
        return n * e + rows * (LABEL_BYTES + e)
    return 3.0 * n * e  # kl_div, kl_div_logits


def loss_functions(torch, F):
    """name -> f(x, y) returning the scalar loss (default reduction), written as PyTorch users would."""
    log2 = math.log(2.0)

    def rmse(x, y):
        return torch.sqrt(F.mse_loss(x, y))

    def msle(x, y):
        return F.mse_loss(torch.log1p(x.clamp(min=0)), torch.log1p(y.clamp(min=0)))

    def pseudo_huber(x, y):
        r = x - y
        return (torch.sqrt(1 + r * r) - 1).mean()

    def log_cosh(x, y):
        r = x - y
        return (r + F.softplus(-2.0 * r) - log2).mean()

    def hinge(x, y):
        t = torch.where(y > 0, 1.0, -1.0).to(x.dtype)
        return torch.clamp(1 - t * x, min=0).mean()

    def squared_hinge(x, y):
        t = torch.where(y > 0, 1.0, -1.0).to(x.dtype)
        return (torch.clamp(1 - t * x, min=0) ** 2).mean()

    def kl_div_logits(s, u):
        return F.kl_div(F.log_softmax(s, dim=-1), F.log_softmax(u, dim=-1), log_target=True, reduction="batchmean")

    return {
        "mse": F.mse_loss,
        "mae": F.l1_loss,
        "rmse": rmse,
        "msle": msle,
        "huber": lambda x, y: F.huber_loss(x, y, delta=1.0),
        "smooth_l1": lambda x, y: F.smooth_l1_loss(x, y, beta=1.0),
        "pseudo_huber": pseudo_huber,
        "log_cosh": log_cosh,
        "hinge": hinge,
        "squared_hinge": squared_hinge,
        "bce": F.binary_cross_entropy,
        "bce_with_logits": F.binary_cross_entropy_with_logits,
        "cross_entropy": F.cross_entropy,
        "nll": F.nll_loss,
        "kl_div": lambda q, p: F.kl_div(q, p, reduction="mean"),
        "kl_div_logits": kl_div_logits,
    }


def liger_functions():
    """Liger-Kernel implementations where the package is importable: name -> f(x, y)."""
    out = {}
    try:
        from liger_kernel.transformers import LigerCrossEntropyLoss
        ce = LigerCrossEntropyLoss()
        out["cross_entropy"] = lambda z, y: ce(z, y)
    except Exception:  # noqa: BLE001 - any import problem just means "not available"
        pass
    try:
        from liger_kernel.transformers import LigerKLDIVLoss
        kl = LigerKLDIVLoss(reduction="mean")
        out["kl_div"] = lambda q, p: kl(q, p)
    except Exception:  # noqa: BLE001
        pass
    return out


def make_inputs(torch, loss, dtype, shape, seed, device):
    """One buffer set: the input (requires grad) and the target (labels for cross_entropy / nll)."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    n = math.prod(shape)
    lo, hi = INPUT_RANGE.get(loss, (-2.0, 2.0))
    x = (torch.rand(n, generator=g, device=device, dtype=torch.float32) * (hi - lo) + lo).to(dtype).view(*shape)
    if loss in ("cross_entropy", "nll"):
        y = torch.randint(0, shape[1], (shape[0],), generator=g, device=device, dtype=torch.int64)
    elif loss in ("hinge", "squared_hinge"):
        y = (torch.randint(0, 2, (n,), generator=g, device=device) * 2 - 1).to(dtype).view(*shape)
    elif loss == "kl_div":
        y = (torch.rand(n, generator=g, device=device) * (2.0 / shape[1])).to(dtype).view(*shape)
    else:
        tlo, thi = TARGET_RANGE.get(loss, (-1.0, 1.0))
        y = (torch.rand(n, generator=g, device=device) * (thi - tlo) + tlo).to(dtype).view(*shape)
    x.requires_grad_(True)
    return x, y


def summary(samples):
    samples.sort()
    return {"median_ms": statistics.median(samples), "min_ms": samples[0], "mean_ms": statistics.fmean(samples),
            "max_ms": samples[-1], "samples": len(samples)}


class CpuTimer:
    """fusedloss bench's CPU timer: warm-up calls, then one perf_counter pair per call."""

    def __init__(self, repeats, warmup, max_seconds):
        self.repeats, self.warmup, self.max_seconds = repeats, warmup, max_seconds

    def time(self, once):
        for i in range(self.warmup):
            once(i)
        samples = []
        start = time.perf_counter()
        for i in range(max(1, self.repeats)):
            t0 = time.perf_counter()
            once(self.warmup + i)
            t1 = time.perf_counter()
            samples.append((t1 - t0) * 1e3)
            if len(samples) >= 3 and t1 - start > self.max_seconds:
                break
        return summary(samples)


def cpu_cache_bytes():
    """The largest cache of cpu0 (the last level), as fusedloss bench reads it."""
    best = 0
    for i in range(8):
        try:
            with open(f"/sys/devices/system/cpu/cpu0/cache/index{i}/size", encoding="utf-8") as f:
                text = f.read().strip()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        best = max(best, int(text[:-1] if mult != 1 else text) * mult)
    return best


def cpu_model_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


class Timer:
    def __init__(self, torch, repeats, warmup, max_seconds, hold):
        self.torch, self.repeats, self.warmup, self.max_seconds, self.hold = torch, repeats, warmup, max_seconds, hold

    def time(self, once):
        torch = self.torch
        t0 = time.perf_counter()
        for i in range(max(1, self.warmup)):
            once(i)
        torch.cuda.synchronize()
        per_call = (time.perf_counter() - t0) / max(1, self.warmup)
        # Host time to enqueue one call (no synchronisation): how long the GPU must be held per call.
        t0 = time.perf_counter()
        once(0)
        enqueue = time.perf_counter() - t0
        torch.cuda.synchronize()
        reps = self.repeats
        if per_call * reps > self.max_seconds:
            reps = max(3, int(self.max_seconds / max(per_call, 1e-9)))
        samples = []
        batch = 32
        for b0 in range(0, reps, batch):
            b1 = min(reps, b0 + batch)
            starts = [torch.cuda.Event(enable_timing=True) for _ in range(b0, b1)]
            stops = [torch.cuda.Event(enable_timing=True) for _ in range(b0, b1)]
            if self.hold is not None:
                # Keep the GPU busy while the host enqueues the batch (1.5x the measured enqueue time;
                # _sleep counts clock cycles, ~2e9 per second on an H100/H200).
                self.hold(int(2e9 * min(1.0, 1.5 * enqueue * (b1 - b0)) + 2e6))
            for k in range(b1 - b0):
                starts[k].record()
                once(self.warmup + b0 + k)
                stops[k].record()
            torch.cuda.synchronize()
            samples += [s.elapsed_time(e) for s, e in zip(starts, stops)]
        return summary(samples)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loss", default=",".join(DEFAULT_LOSSES), help="comma list or 'all'")
    ap.add_argument("--dtype", default="f32,bf16", help="comma list of f32, f16, bf16")
    ap.add_argument("--sizes", default=",".join(DEFAULT_SIZES), help="elementwise sizes (2^20, 1M, 1048576)")
    ap.add_argument("--shapes", default=",".join(DEFAULT_SHAPES), help="row-wise N x C shapes")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--threads", type=int, default=0, help="CPU: torch intra-op threads (0: torch's default)")
    ap.add_argument("--repeats", type=int, help="timed calls per measurement (default GPU 50, CPU 15)")
    ap.add_argument("--warmup", type=int, help="untimed calls first (default GPU 5, CPU 1)")
    ap.add_argument("--max-time", type=float, help="seconds of timed calls per measurement (default GPU 2, CPU 0.4)")
    ap.add_argument("--impl", default="torch_eager,torch_compile,liger",
                    help="comma list of torch_eager, torch_compile, liger")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--commit", default=os.environ.get("FUSEDLOSS_COMMIT", os.environ.get("GIT_COMMIT", "")))
    args = ap.parse_args(argv)

    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        sys.exit("torch_peers.py: error: PyTorch is not installed")
    on_cpu = args.device == "cpu"
    if not on_cpu and not torch.cuda.is_available():
        print("torch_peers.py: no CUDA device is available", file=sys.stderr)
        return 3
    if args.repeats is None:
        args.repeats = 15 if on_cpu else 50
    if args.warmup is None:
        args.warmup = 1 if on_cpu else 5
    if args.max_time is None:
        args.max_time = 0.4 if on_cpu else 2.0
    if on_cpu and args.threads > 0:
        torch.set_num_threads(args.threads)

    losses = ELEMENTWISE + ROWWISE if args.loss == "all" else args.loss.split(",")
    for loss in losses:
        if loss not in ELEMENTWISE + ROWWISE:
            sys.exit(f"torch_peers.py: error: unknown loss {loss!r}")
    dtypes = args.dtype.split(",")
    for d in dtypes:
        if d not in DTYPE_BYTES:
            sys.exit(f"torch_peers.py: error: unknown dtype {d!r}")
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    shapes = [parse_shape(s) for s in args.shapes.split(",")]
    impls = args.impl.split(",")
    torch_dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}

    if on_cpu:
        device = torch.device("cpu")
        rotate_bytes = 2.0 * max(cpu_cache_bytes(), 16 << 20)
        timer = CpuTimer(args.repeats, args.warmup, args.max_time)
    else:
        device = torch.device("cuda")
        props = torch.cuda.get_device_properties(device)
        l2 = getattr(props, "L2_cache_size", 50 << 20) or (50 << 20)
        rotate_bytes = 4.0 * l2
        hold = getattr(torch.cuda, "_sleep", None)
        timer = Timer(torch, args.repeats, args.warmup, args.max_time, hold)
    fns = loss_functions(torch, F)
    liger = liger_functions() if "liger" in impls else {}
    if "torch_compile" in impls:
        import torch._dynamo
        torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)

    versions = {"torch_version": torch.__version__}
    if not on_cpu:
        versions["runtime_version"] = torch.version.cuda
    try:
        import triton
        versions["triton_version"] = triton.__version__
    except Exception:  # noqa: BLE001
        pass
    try:
        if on_cpu:
            raise RuntimeError("no GPU driver on the CPU path")
        import subprocess
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i", "0"],
                             capture_output=True, text=True, timeout=20, check=True)
        versions["driver_version"] = out.stdout.strip()
    except Exception:  # noqa: BLE001
        pass
    try:
        import importlib.metadata as md
        versions["liger_kernel_version"] = md.version("liger-kernel")
    except Exception:  # noqa: BLE001
        pass
    doc = {
        "schema": SCHEMA,
        "generator": "bench/peers/torch_peers.py",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
        "commit": args.commit,
        "device": ({"backend": "cpu", "name": cpu_model_name(), "threads": torch.get_num_threads(),
                    "cache_bytes": cpu_cache_bytes(), **versions} if on_cpu else
                   {"backend": "cuda", "name": props.name,
                    "compute_capability": f"{props.major}.{props.minor}",
                    "sm_count": props.multi_processor_count, "memory_bytes": props.total_memory, "l2_bytes": l2,
                    **versions}),
        "settings": {"warmup": args.warmup, "repeats": args.repeats, "max_case_seconds": args.max_time,
                     "rotate_bytes": rotate_bytes,
                     "timer": "perf_counter per call" if on_cpu else
                     "cuda events, one pair per call, GPU held by torch.cuda._sleep while enqueuing"
                     if hold else "cuda events, one pair per call",
                     "bytes_model": "fusedloss's: the bytes the fused call must move"},
        "results": [],
    }

    cases = []
    for loss in losses:
        for dtype in dtypes:
            for shape in ([(n,) for n in sizes] if loss in ELEMENTWISE else shapes):
                cases.append((loss, dtype, shape))

    def write():
        if args.json:
            tmp = args.json + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=2)
                f.write("\n")
            os.replace(tmp, args.json)

    for i, (loss, dtype, shape) in enumerate(cases):
        label = f"{loss} {dtype} {'x'.join(map(str, shape))}"
        print(f"[{i + 1}/{len(cases)}] {label} ...", file=sys.stderr, flush=True)
        nbytes = traffic_bytes(loss, dtype, shape)
        numel = math.prod(shape)
        set_bytes = 2.0 * numel * DTYPE_BYTES[dtype] + (numel * DTYPE_BYTES[dtype] if loss not in ("cross_entropy", "nll")
                                                        else shape[0] * LABEL_BYTES)
        base = {"loss": loss, "dtype": dtype, "shape": list(shape), "elements": numel,
                "reduction": "batchmean" if loss == "kl_div_logits" else "mean", "weighted": False, "inplace": False,
                "bytes": nbytes}
        if loss == "cross_entropy":
            base["targets"] = "labels"
        try:
            # Copy ceiling, on its own buffers.
            copy_bytes = int(nbytes // 2)
            nsets = int(min(64, max(1, math.ceil(rotate_bytes / max(1, 2 * copy_bytes)))))
            src = [torch.full((copy_bytes,), k + 1, dtype=torch.uint8, device=device) for k in range(nsets)]
            dst = [torch.empty_like(s) for s in src]
            copy = timer.time(lambda k: dst[k % nsets].copy_(src[k % nsets]))
            del src, dst
            copy_bw = nbytes / (copy["median_ms"] * 1e-3) / 1e9
            records = [dict(base, impl="copy", buffer_sets=nsets, copy_bandwidth_gbps=copy_bw, **copy,
                            bandwidth_gbps=copy_bw, ratio_to_copy=1.0)]

            nsets = int(min(64, max(1, math.ceil(rotate_bytes / set_bytes))))
            sets = [make_inputs(torch, loss, torch_dtype[dtype], shape, 1000 + k, device) for k in range(nsets)]
            if not on_cpu:
                torch.cuda.synchronize()
            candidates = []
            if "torch_eager" in impls:
                candidates.append(("torch_eager", fns[loss]))
            if "torch_compile" in impls:
                candidates.append(("torch_compile", torch.compile(fns[loss], dynamic=False)))
            if loss in liger:
                candidates.append(("liger", liger[loss]))
            for impl, fn in candidates:
                def once(k, fn=fn):
                    x, y = sets[k % nsets]
                    value = fn(x, y)
                    (grad,) = torch.autograd.grad(value, x)
                    return value, grad

                try:
                    t = timer.time(once)
                    value, _ = once(0)
                    bw = nbytes / (t["median_ms"] * 1e-3) / 1e9
                    records.append(dict(base, impl=impl, buffer_sets=nsets, copy_bandwidth_gbps=copy_bw, **t,
                                        bandwidth_gbps=bw, ratio_to_copy=bw / copy_bw, loss_value=float(value)))
                    print(f"    {impl:14s} {t['median_ms']:10.4f} ms {bw:9.1f} GB/s ({bw / copy_bw:.2f} of copy)",
                          file=sys.stderr, flush=True)
                except Exception as e:  # noqa: BLE001 - e.g. out of memory, an op without bf16 support
                    print(f"torch_peers.py: skipped {impl} for {label}: {str(e).splitlines()[0] if str(e) else e!r}",
                          file=sys.stderr)
                    if not on_cpu:
                        torch.cuda.empty_cache()
            del sets
            if not on_cpu:
                torch.cuda.empty_cache()
        except torch.cuda.OutOfMemoryError as e:
            print(f"torch_peers.py: skipped {label}: out of memory ({str(e).splitlines()[0]})", file=sys.stderr)
            torch.cuda.empty_cache()
            continue
        doc["results"] += records
        write()

    write()
    # The table on stdout, peers next to the copy ceiling.
    print(f"{'loss':16s} {'dtype':5s} {'size':14s} {'impl':14s} {'ms':>10s} {'GB/s':>9s} {'ratio':>6s}")
    for r in doc["results"]:
        size = "x".join(map(str, r["shape"]))
        print(f"{r['loss']:16s} {r['dtype']:5s} {size:14s} {r['impl']:14s} {r['median_ms']:10.4f} "
              f"{r['bandwidth_gbps']:9.1f} {r['ratio_to_copy']:6.2f}")
    if args.json:
        print(f"torch_peers.py: wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
