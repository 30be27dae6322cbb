"""Row-wise losses against torch.nn.functional (twins) or their formulas written in torch (ours)."""
import pytest
import torch
import torch.nn.functional as F

import fusedloss.torch as FL
from fusedloss.torch import _ops as fl_ops
from helpers import DTYPES, assert_close, compare

N, C = 9, 7
gen = torch.Generator().manual_seed(1)


def logits(n=N, c=C):
    return (torch.randn(n, c, generator=gen, dtype=torch.float64) * 3).requires_grad_()


def labels(ignore_index=-100, n=N):
    y = torch.randint(0, C, (n,), generator=gen)
    y[2] = ignore_index
    return y


def class_weight():
    return torch.rand(C, generator=gen, dtype=torch.float64) + 0.2


def probabilities(n=N):
    return torch.softmax(torch.randn(n, C, generator=gen, dtype=torch.float64), 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("ignore_index", [-100, 3])
def test_cross_entropy_labels_match_torch(ignore_index, label_smoothing, weighted, reduction, dtype):
    w = class_weight() if weighted else None
    kwargs = dict(ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction)
    compare(FL.cross_entropy, F.cross_entropy, [logits(), labels(ignore_index)], dtype,
            {**kwargs, "weight": None if w is None else w.float()}, {**kwargs, "weight": w})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_cross_entropy_probabilities_match_torch(label_smoothing, weighted, reduction, dtype):
    w = class_weight() if weighted else None
    kwargs = dict(label_smoothing=label_smoothing, reduction=reduction)
    compare(FL.cross_entropy, F.cross_entropy, [logits(), probabilities()], dtype,
            {**kwargs, "weight": None if w is None else w.float()}, {**kwargs, "weight": w})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_nll_matches_torch(weighted, reduction, dtype):
    w = class_weight() if weighted else None
    log_p = torch.log_softmax(logits(), 1).detach().requires_grad_()
    compare(FL.nll_loss, F.nll_loss, [log_p, labels()], dtype,
            {"reduction": reduction, "weight": None if w is None else w.float()}, {"reduction": reduction, "weight": w})


def test_int32_labels():
    y = labels()
    compare(FL.cross_entropy, lambda x, _: F.cross_entropy(x, y), [logits(), y.int()], torch.float32)


@pytest.mark.filterwarnings("ignore:reduction. .mean. divides")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_matches_torch(log_target, reduction, dtype):
    q = torch.log_softmax(logits(), 1).detach().requires_grad_()
    p = probabilities()
    if not log_target:  # both 0 there (with log_target PyTorch's e^-inf·(-inf) is NaN: see below)
        p[0, 1] = 0
    target = torch.log(p) if log_target else p
    kwargs = dict(reduction=reduction, log_target=log_target)
    compare(FL.kl_div, F.kl_div, [q, target], dtype, kwargs, kwargs)


def test_kl_div_is_zero_where_target_is_zero_even_at_minus_inf():
    """Documented difference: PyTorch gives NaN for p = 0, q = −inf; fusedloss 0 (loss and gradient)."""
    q = torch.log_softmax(torch.randn(2, 3, generator=gen), 1)
    q[0, 1] = -float("inf")
    p = torch.softmax(torch.randn(2, 3, generator=gen), 1)
    p[0, 1] = 0
    q.requires_grad_()
    loss = FL.kl_div(q, p, reduction="none")
    assert loss[0, 1] == 0 and torch.isnan(F.kl_div(q, p, reduction="none")[0, 1])
    (g,) = torch.autograd.grad(loss.sum(), q)
    assert g[0, 1] == 0 and torch.isfinite(g).all()


def _kl_div_logits(student, teacher, temperature, reduction):
    p = torch.softmax(teacher / temperature, 1)
    rows = temperature**2 * (p * (torch.log(p) - torch.log_softmax(student / temperature, 1))).sum(1)
    return {"none": rows, "sum": rows.sum(), "batchmean": rows.sum() / rows.numel(),
            "mean": rows.sum() / student.numel()}[reduction]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum", "batchmean"])
def test_kl_div_logits_matches_its_formula(reduction, dtype):
    compare(FL.kl_div_logits, lambda s, t: _kl_div_logits(s, t, 2.0, reduction), [logits(), logits().detach()],
            dtype, {"reduction": reduction, "temperature": 2.0})


def test_kl_div_logits_defaults_to_batchmean():
    s, t = logits(), logits().detach()
    torch.testing.assert_close(FL.kl_div_logits(s.float(), t.float()),
                               _kl_div_logits(s, t, 1.0, "batchmean").float())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_z_loss_and_softcap_match_their_formulas(reduction, dtype):
    z_loss, softcap = 1e-2, 5.0

    def reference(x, y):
        capped = softcap * torch.tanh(x / softcap)
        rows = F.cross_entropy(capped, y, reduction="none") + z_loss * torch.logsumexp(capped, 1) ** 2
        rows = torch.where(y == -100, 0.0, rows)
        kept = (y != -100).sum()
        return {"none": rows, "sum": rows.sum(), "mean": rows.sum() / kept}[reduction]

    compare(FL.cross_entropy, reference, [logits(), labels()], dtype,
            {"reduction": reduction, "z_loss": z_loss, "softcap": softcap})


def test_return_lse_and_error_count():
    x, y = logits().float(), labels()
    loss, lse, err = FL.cross_entropy(x, y, return_lse=True, return_error_count=True)
    assert_close(lse, torch.logsumexp(x, 1), torch.float32)  # every row, ignored ones too
    assert lse.dtype == torch.float32 and err.dtype == torch.int64 and err.item() == 0
    assert_close(loss, F.cross_entropy(x, y), torch.float32)


def test_bad_labels_follow_the_contract():
    """A label outside [0, C): that row's loss NaN and gradient 0, counted; no exception."""
    x, y = logits().float().detach().requires_grad_(), labels()
    y[4], y[6] = C, -1
    rows, err = FL.cross_entropy(x, y, reduction="none", return_error_count=True)
    assert err.item() == 2
    assert torch.isnan(rows[[4, 6]]).all() and torch.isfinite(rows[[0, 1, 2, 3, 5, 7, 8]]).all()
    (g,) = torch.autograd.grad(rows.nansum(), x)
    assert (g[[4, 6]] == 0).all()
    good = [0, 1, 3, 5, 7, 8]
    assert_close(g[good], torch.autograd.grad(F.cross_entropy(x[good], y[good], reduction="sum"), x)[0][good],
                 torch.float32)


def test_every_row_ignored_gives_nan_mean_and_zero_gradient():
    x = logits().float().detach().requires_grad_()
    loss = FL.cross_entropy(x, torch.full((N,), -100))
    assert torch.isnan(loss)
    (g,) = torch.autograd.grad(loss, x)
    assert (g == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_inplace_backward_matches_torch_and_destroys_the_logits(reduction, dtype):
    leaf = logits().detach().to(dtype).requires_grad_()
    y = labels()
    x = leaf * 1  # a non-leaf, as logits from a model are
    loss = FL.cross_entropy(x, y, reduction=reduction, label_smoothing=0.1, inplace_backward=True)
    d_loss = torch.rand(loss.shape, generator=gen).to(dtype) + 0.5
    (g,) = torch.autograd.grad(loss, leaf, d_loss)
    ref_leaf = leaf.detach().double().requires_grad_()
    ref = F.cross_entropy(ref_leaf, y, reduction=reduction, label_smoothing=0.1)
    (ref_g,) = torch.autograd.grad(ref, ref_leaf, d_loss.double())
    assert_close(loss, ref, dtype)
    assert_close(g, ref_g, dtype)
    assert not torch.equal(x.detach(), leaf.detach())  # the logits now hold their gradient


def test_inplace_backward_is_refused_when_the_logits_are_saved_elsewhere():
    leaf = logits().float().detach().requires_grad_()
    x = torch.exp(leaf)  # exp saves its output for backward
    loss = FL.cross_entropy(x, labels(), inplace_backward=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_padded_rows_are_not_copied(monkeypatch):
    """Rows with a row stride > C go to the library as they are; the gradient keeps that stride."""
    storage = torch.randn(N, C + 5, generator=gen, dtype=torch.float64)
    x = storage[:, :C].float().detach()
    x = torch.as_strided(torch.empty(N * (C + 5)), (N, C), (C + 5, 1)).copy_(x).requires_grad_()
    seen = []
    op = fl_ops.rowwise

    def spy(loss, input, *args):
        out = op(loss, input, *args)
        seen.append((input.data_ptr(), out[1].stride()))
        return out

    monkeypatch.setattr(fl_ops, "rowwise", spy)
    y = labels()
    loss = FL.cross_entropy(x, y)
    assert seen == [(x.data_ptr(), (C + 5, 1))]
    (g,) = torch.autograd.grad(loss, x)
    ref_x = x.detach().double().requires_grad_()
    assert_close(g, torch.autograd.grad(F.cross_entropy(ref_x, y), ref_x)[0], torch.float32)


@pytest.mark.parametrize("inplace_backward", [False, True])
def test_grad_scale_scales_the_gradient_not_the_loss(inplace_backward):
    x, y = logits().float().detach(), labels()
    plain = x.clone().requires_grad_()
    scaled = x.clone().requires_grad_()
    loss = FL.cross_entropy(plain * 1, y)
    loss.backward()
    scaled_loss = FL.cross_entropy(scaled * 1, y, grad_scale=8.0, inplace_backward=inplace_backward)
    scaled_loss.backward()
    assert scaled_loss.item() == loss.item()
    assert torch.equal(scaled.grad, plain.grad * 8)  # a power of two: exact
