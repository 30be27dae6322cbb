"""CPU time of cross-entropy forward + backward: fusedloss.torch against torch.nn.functional.

    python examples/bench_cross_entropy.py [--shapes 512x32000 4096x4096] [--repeat 10]
Median wall time of one forward + backward on float32 logits, torch's threads (torch.get_num_threads()).
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import fusedloss.torch as FL


def median_ms(fn, logits, labels, repeat):
    times = []
    for _ in range(repeat + 1):  # the first run warms up allocators and thread pools
        x = logits.detach().requires_grad_()
        began = time.perf_counter()
        fn(x, labels).backward()
        times.append(time.perf_counter() - began)
    return statistics.median(times[1:]) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["512x32000", "4096x4096"])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    variants = {
        "F.cross_entropy": F.cross_entropy,
        "fusedloss": FL.cross_entropy,
        "fusedloss in-place": lambda z, y: FL.cross_entropy(z, y, inplace_backward=True),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median ms of forward + backward, f32")
    for shape in args.shapes:
        n, c = map(int, shape.split("x"))
        g = torch.Generator().manual_seed(0)
        logits, labels = torch.randn(n, c, generator=g), torch.randint(0, c, (n,), generator=g)
        row = ", ".join(f"{name} {median_ms(fn, logits, labels, args.repeat):.1f}" for name, fn in variants.items())
        print(f"{shape}: {row}")


if __name__ == "__main__":
    main()
