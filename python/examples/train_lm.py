"""Train a small character-level language model on the CPU twice from the same start: once with
torch.nn.functional.cross_entropy, once with fusedloss.torch.cross_entropy (loss and gradient in
one fused pass). Prints both loss curves, which agree to float32 rounding, and saves a plot when
matplotlib is installed.

    python examples/train_lm.py [--steps 300] [--inplace-backward] [--plot train_lm.png]
"""
import argparse

import torch
import torch.nn.functional as F
from torch import nn

import fusedloss.torch as FL

TEXT = " ".join(f"the {a} {b} {c} the {d}." for a in ("quick", "lazy", "small", "old") for b in
                ("fox", "dog", "cat", "bird") for c in ("jumps over", "runs past", "sees", "follows") for d in
                ("river", "fence", "hill", "moon"))


class CharMLP(nn.Module):
    """Next character from the previous `context` characters."""

    def __init__(self, vocab, context=8, dim=24, hidden=256):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.hidden = nn.Linear(context * dim, hidden)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, idx):
        return self.out(torch.tanh(self.hidden(self.embed(idx).flatten(1))))


def train(loss_fn, data, vocab, steps, batch, context, seed=0):
    torch.manual_seed(seed)
    model = CharMLP(vocab, context)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batches = torch.Generator().manual_seed(seed)
    curve = []
    for _ in range(steps):
        start = torch.randint(0, len(data) - context - 1, (batch,), generator=batches)
        idx = start[:, None] + torch.arange(context)
        loss = loss_fn(model(data[idx]), data[start + context])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        curve.append(loss.item())
    return curve


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--inplace-backward", action="store_true", help="fusedloss writes the gradient over the logits")
    parser.add_argument("--plot", default="train_lm.png")
    args = parser.parse_args()

    chars = sorted(set(TEXT))
    data = torch.tensor([chars.index(ch) for ch in TEXT])
    context, smoothing = 8, 0.05
    runs = {
        "torch": lambda z, y: F.cross_entropy(z, y, label_smoothing=smoothing),
        "fusedloss": lambda z, y: FL.cross_entropy(z, y, label_smoothing=smoothing,
                                                   inplace_backward=args.inplace_backward),
    }
    curves = {name: train(fn, data, len(chars), args.steps, args.batch, context) for name, fn in runs.items()}

    print(f"{len(chars)}-character vocabulary, batch {args.batch}, {args.steps} Adam steps")
    print(f"{'step':>5} {'torch':>10} {'fusedloss':>10} {'rel diff':>9}")
    rel = [abs(a - b) / abs(a) for a, b in zip(curves["torch"], curves["fusedloss"])]
    for step in list(range(0, args.steps, max(1, args.steps // 12))) + [args.steps - 1]:
        print(f"{step + 1:>5} {curves['torch'][step]:>10.6f} {curves['fusedloss'][step]:>10.6f} {rel[step]:>9.1e}")
    print(f"max relative difference {max(rel):.1e}")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
    else:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for name, curve in curves.items():
            ax.plot(range(1, args.steps + 1), curve, label=name, linestyle="-" if name == "torch" else "--")
        ax.set(xlabel="step", ylabel="cross-entropy (label smoothing 0.05)", yscale="log", title="char MLP LM")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")
    # Float32 rounding compounds over training steps; anything beyond that would be a bug.
    if max(rel) > 1e-4:
        raise SystemExit("the loss curves disagree beyond float32 rounding")


if __name__ == "__main__":
    main()
