"""fusedloss.torch.linear_cross_entropy against cross_entropy(h @ W.T + b) in float64: every
option, every dtype, autograd gradients of hidden, weight and bias, opcheck, torch.compile."""
import re

import pytest
import torch
import torch.nn.functional as F

import fusedloss
import fusedloss.torch as FL
from helpers import assert_close, compare

N, H, V = 37, 65, 1003  # not multiples of anything; chunk caps below do not divide N
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
gen = torch.Generator().manual_seed(16)


def problem(with_bias=True, n=N):
    hidden = torch.randn(n, H, generator=gen, requires_grad=True)
    weight = (torch.randn(V, H, generator=gen) / H ** 0.5).requires_grad_()
    bias = (torch.randn(V, generator=gen) * 0.1).requires_grad_() if with_bias else None
    target = torch.randint(0, V, (n,), generator=gen)
    target[::7] = -100  # ignored rows
    return hidden, weight, bias, target


def reference(hidden, weight, target, bias=None, class_weight=None, ignore_index=-100, reduction="mean",
              label_smoothing=0.0, z_loss=0.0, softcap=0.0, **_):
    """matmul, then PyTorch's cross_entropy, plus softcap and z-loss as their formulas."""
    z = hidden @ weight.T + (0 if bias is None else bias)
    if softcap:
        z = softcap * torch.tanh(z / softcap)
    w = None if class_weight is None else class_weight.to(z.dtype)
    rows = F.cross_entropy(z, target, weight=w, ignore_index=ignore_index, reduction="none",
                           label_smoothing=label_smoothing) + z_loss * torch.logsumexp(z, 1) ** 2
    kept = target != ignore_index
    rows = torch.where(kept, rows, 0.0)
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    wy = torch.ones_like(rows) if w is None else w[torch.where(kept, target, 0)]
    return rows.sum() / torch.where(kept, wy, 0.0).sum()


OPTIONS = {
    "plain": {},
    "sum": {"reduction": "sum"},
    "class_weight": {"class_weight": torch.rand(V, generator=gen) + 0.1},
    "label_smoothing": {"label_smoothing": 0.1},
    "z_loss": {"z_loss": 1e-3},
    "softcap": {"softcap": 3.0},
    "ignore_index_5": {"ignore_index": 5},
    "everything": {"class_weight": torch.rand(V, generator=gen) + 0.1, "label_smoothing": 0.2, "z_loss": 1e-2,
                   "softcap": 4.0, "reduction": "sum"},
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", OPTIONS)
@pytest.mark.parametrize("chunk", [0, 11], ids=["budget", "chunk11"])
def test_matches_matmul_then_cross_entropy(case, dtype, chunk):
    hidden, weight, bias, target = problem()
    options = dict(OPTIONS[case])
    if case == "ignore_index_5":
        target = torch.where(target == -100, 5, target)
    compare(lambda h, w, b: FL.linear_cross_entropy(h, w, target, b, max_chunk_rows=chunk, **options),
            lambda h, w, b: reference(h, w, target, b, **options), [hidden, weight, bias], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_no_bias_and_padded_rows(dtype):
    """hidden rows 6 elements apart more than H, read in place (grad_hidden gets the same stride)."""
    hidden, weight, _, target = problem(with_bias=False)
    storage = torch.randn(N, H + 6, generator=gen, dtype=torch.float64).to(dtype)
    padded = storage[:, :H]
    padded.copy_(hidden.detach())
    padded.requires_grad_()
    w = weight.detach().to(dtype).requires_grad_()
    loss = FL.linear_cross_entropy(padded, w, target, max_chunk_rows=5)
    gh, gw = torch.autograd.grad(loss, [padded, w], torch.tensor(0.75, dtype=dtype))
    op_grad = torch.ops.fusedloss.linear_cross_entropy(padded, w, None, target, None, 1, 1.0, -100, 0.0, 0.0, 0.0,
                                                       256 << 20, 5, True, False, False)[1]
    assert op_grad.stride() == padded.stride()
    h64, w64 = padded.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = reference(h64, w64, target)
    rh, rw = torch.autograd.grad(ref, [h64, w64], torch.tensor(0.75, dtype=torch.float64))
    assert_close(loss, ref, dtype)
    assert_close(gh, rh, dtype)
    assert_close(gw, rw, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", ["plain", "everything_but_reduction"])
def test_reduction_none_with_per_row_upstream(case, dtype):
    """grad_output differs per row: grad_hidden from the fused call, weight / bias recomputed."""
    hidden, weight, bias, target = problem()
    options = {k: v for k, v in OPTIONS["everything"].items() if k != "reduction"} if case != "plain" else {}
    compare(lambda h, w, b: FL.linear_cross_entropy(h, w, target, b, reduction="none", max_chunk_rows=8, **options),
            lambda h, w, b: reference(h, w, target, b, reduction="none", **options), [hidden, weight, bias], dtype)


@pytest.mark.parametrize("n", [0, 1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_and_single_row(n, reduction):
    hidden, weight, bias, _ = problem(n=n)
    target = torch.randint(0, V, (n,), generator=gen)
    compare(lambda h, w, b: FL.linear_cross_entropy(h, w, target, b, reduction=reduction),
            lambda h, w, b: reference(h, w, target, b, reduction=reduction), [hidden, weight, bias], torch.float32)


def test_lse_error_count_and_int32_labels():
    hidden, weight, bias, target = problem()
    bad = target.clone()
    bad[3] = V  # out of range, not ignore_index: loss NaN, counted
    with torch.no_grad():
        loss, lse, err = FL.linear_cross_entropy(hidden, weight, bad.to(torch.int32), bias, reduction="none",
                                                 return_lse=True, return_error_count=True)
    z = hidden.double() @ weight.double().T + bias.double()
    assert_close(lse, torch.logsumexp(z, 1), torch.float32)
    assert int(err) == 1 and torch.isnan(loss[3]) and torch.isfinite(loss[torch.arange(N) != 3]).all()


def test_budget_does_not_change_the_result_and_is_reproducible():
    hidden, weight, bias, target = problem()
    runs = [torch.autograd.grad(FL.linear_cross_entropy(hidden, weight, target, bias, memory_budget=budget),
                                [hidden, weight, bias]) for budget in (256 << 20, 256 << 20, 128 << 10)]
    for a, b in zip(runs[0], runs[1]):
        assert torch.equal(a, b)  # bitwise, run to run
    for a, c in zip(runs[0], runs[2]):
        assert_close(c, a, torch.float32)


def test_too_small_budget_names_the_minimum_and_the_minimum_works():
    hidden, weight, bias, target = problem()
    with pytest.raises(ValueError, match="cannot hold one row") as info:
        FL.linear_cross_entropy(hidden, weight, target, bias, memory_budget=1024)
    minimum = int(re.search(r"needs at least (\d+) bytes", str(info.value)).group(1))
    with pytest.raises(ValueError, match=f"needs at least {minimum} bytes"):
        FL.linear_cross_entropy(hidden, weight, target, bias, memory_budget=minimum - 1)
    at_minimum = torch.autograd.grad(FL.linear_cross_entropy(hidden, weight, target, bias, memory_budget=minimum),
                                     [hidden, weight, bias])
    roomy = torch.autograd.grad(FL.linear_cross_entropy(hidden, weight, target, bias), [hidden, weight, bias])
    for a, b in zip(at_minimum, roomy):
        assert_close(a, b, torch.float32)


def test_module_and_gradient_accumulation_over_steps():
    hidden, weight, bias, target = problem()
    module = FL.LinearCrossEntropyLoss(label_smoothing=0.1, z_loss=1e-3)
    assert "label_smoothing=0.1" in repr(module)
    for _ in range(2):
        module(hidden, weight, target, bias).backward()
    h64, w64, b64 = (t.detach().double().requires_grad_() for t in (hidden, weight, bias))
    (2 * reference(h64, w64, target, b64, label_smoothing=0.1, z_loss=1e-3)).backward()
    for ours, ref in ((hidden, h64), (weight, w64), (bias, b64)):
        assert_close(ours.grad, ref.grad, torch.float32)


def op_args(reduction):
    hidden, weight, bias, target = problem(n=9)
    class_weight = torch.rand(V, generator=gen) + 0.1
    wants = (reduction != fusedloss.REDUCTIONS["none"],) * 2  # none: backward recomputes them
    return (hidden, weight, bias, target, class_weight, reduction, 1.0, -100, 0.1, 1e-3, 0.0, 256 << 20, 4,
            True) + wants


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_opcheck(reduction):
    torch.library.opcheck(torch.ops.fusedloss.linear_cross_entropy.default, op_args(fusedloss.REDUCTIONS[reduction]))


def test_backward_refuses_a_gradient_the_forward_did_not_compute():
    hidden, weight, bias, target = problem()
    loss = torch.ops.fusedloss.linear_cross_entropy(hidden, weight, bias, target, None, fusedloss.REDUCTIONS["sum"],
                                                    1.0, -100, 0.0, 0.0, 0.0, 256 << 20, 0, True, False, True)[0]
    with pytest.raises(RuntimeError, match="the weight gradient was not computed"):
        loss.backward()


def test_compiled_lm_head_has_no_graph_breaks_and_matches_torch():
    """A body + LM head whose loss is the fused op, in one torch.compile(fullgraph=True) graph."""
    hidden, _, _, target = problem()
    torch.manual_seed(0)
    body, head = torch.nn.Sequential(torch.nn.Linear(H, 48), torch.nn.Tanh()), torch.nn.Linear(48, V)
    params = list(body.parameters()) + list(head.parameters())

    def ours(x, y):
        return FL.linear_cross_entropy(body(x), head.weight, y, head.bias, label_smoothing=0.1, softcap=5.0) * 2

    def theirs(x, y):
        return reference(body(x), head.weight, y, head.bias, label_smoothing=0.1, softcap=5.0) * 2

    torch._dynamo.reset()
    results = []
    for fn in (torch.compile(ours, fullgraph=True), theirs):
        loss = fn(hidden.detach(), target)
        results.append((loss.detach(), torch.autograd.grad(loss, params)))
    assert_close(results[0][0], results[1][0], torch.float32)
    for a, b in zip(results[0][1], results[1][1]):
        assert_close(a, b, torch.float32)


h, w, b, y = torch.randn(4, 8), torch.randn(10, 8), torch.randn(10), torch.tensor([0, 1, 2, 9])


@pytest.mark.parametrize("call,error,text", [
    (lambda: FL.linear_cross_entropy(h, w[:, :7], y), ValueError, "weight must be [V, H] with hidden's H"),
    (lambda: FL.linear_cross_entropy(h, w.half(), y), ValueError, "weight must have hidden's dtype"),
    (lambda: FL.linear_cross_entropy(h.double(), w.double(), y), TypeError, "hidden must be float32, float16"),
    (lambda: FL.linear_cross_entropy(h, w, y[:3]), ValueError, "target labels must be a contiguous [N] vector"),
    (lambda: FL.linear_cross_entropy(h, w, y.float()), TypeError, "target must hold class indices"),
    (lambda: FL.linear_cross_entropy(h, w, y.to(torch.int16)), TypeError, "class labels must be int64 or int32"),
    (lambda: FL.linear_cross_entropy(h, w, y, b[:9]), ValueError, "bias must be a contiguous [V] vector"),
    (lambda: FL.linear_cross_entropy(h, w, y, class_weight=torch.ones(9)), ValueError, "class_weight must be a contiguous float32 [V] vector"),
    (lambda: FL.linear_cross_entropy(h.reshape(2, 2, 8), w, y), ValueError, "hidden must be 2-D"),
    (lambda: FL.linear_cross_entropy(h, w, y, label_smoothing=1.5), ValueError,
     "fusedloss linear_cross_entropy: invalid argument"),
    (lambda: FL.linear_cross_entropy(h, w, y, reduction="batchmean"), ValueError, "invalid argument"),
    (lambda: FL.linear_cross_entropy(h, w, y, memory_budget=16), ValueError,
     "memory_budget of 16 bytes cannot hold one row; this call needs at least"),
    (lambda: FL.LinearCrossEntropyLoss(smoothing=0.1), TypeError, "smoothing"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_invalid_call_raises(call, error, text):
    with pytest.raises(error, match=re.escape(text)):
        call()
