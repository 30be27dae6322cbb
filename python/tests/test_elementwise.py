"""Elementwise losses against torch.nn.functional (twins) or their formulas written in torch (ours)."""
import pytest
import torch
import torch.nn.functional as F

import fusedloss.torch as FL
from helpers import DTYPES, compare

REDUCTIONS = ["none", "mean", "sum"]
gen = torch.Generator().manual_seed(0)


def data(shape=(7, 5), kind="regression"):
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2
    if kind == "probability":  # bce: input and target in (0, 1)
        return torch.sigmoid(x), torch.rand(shape, generator=gen, dtype=torch.float64)
    if kind == "binary":
        return x, (torch.rand(shape, generator=gen) > 0.5).double()
    return x, torch.randn(shape, generator=gen, dtype=torch.float64)


def weight(shape=(7, 5)):
    return torch.rand(shape, generator=gen, dtype=torch.float64) + 0.25


TWINS = [  # (ours, torch's, data kind, extra kwargs)
    (FL.mse_loss, F.mse_loss, "regression", {}),
    (FL.l1_loss, F.l1_loss, "regression", {}),
    (FL.huber_loss, F.huber_loss, "regression", {"delta": 0.7}),
    (FL.smooth_l1_loss, F.smooth_l1_loss, "regression", {"beta": 0.6}),
    (FL.smooth_l1_loss, F.smooth_l1_loss, "regression", {"beta": 0.0}),
    (FL.binary_cross_entropy, F.binary_cross_entropy, "probability", {}),
    (FL.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits, "binary", {}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ours,theirs,kind,kwargs", TWINS, ids=lambda v: getattr(v, "__name__", None))
def test_twin_matches_torch(ours, theirs, kind, kwargs, reduction, dtype):
    x, y = data(kind=kind)
    compare(ours, theirs, [x.requires_grad_(), y], dtype, {**kwargs, "reduction": reduction},
            {**kwargs, "reduction": reduction})


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ours,theirs", [(FL.mse_loss, F.mse_loss), (FL.l1_loss, F.l1_loss),
                                         (FL.huber_loss, F.huber_loss),
                                         (FL.binary_cross_entropy, F.binary_cross_entropy),
                                         (FL.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits)],
                         ids=lambda v: v.__name__)
def test_weight_matches_torch(ours, theirs, reduction):
    kind = {"binary_cross_entropy": "probability", "binary_cross_entropy_with_logits": "binary"}.get(
        ours.__name__, "regression")
    x, y = data(kind=kind)
    w = weight()
    compare(ours, theirs, [x.requires_grad_(), y], torch.float32, {"reduction": reduction, "weight": w.float()},
            {"reduction": reduction, "weight": w})


def test_weight_broadcasts_like_torch():
    x, y = data(kind="probability")
    w = weight((5,))
    compare(FL.binary_cross_entropy, F.binary_cross_entropy, [x.requires_grad_(), y], torch.float32,
            {"weight": w.float()}, {"weight": w})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pos_weight", ["column", "one", "float"])
def test_pos_weight_matches_torch(pos_weight, dtype):
    x, y = data(kind="binary")
    pw = {"column": torch.rand(5, generator=gen, dtype=torch.float64) * 3 + 0.1,
          "one": torch.tensor([2.5], dtype=torch.float64), "float": 2.5}[pos_weight]
    ref_pw = pw if torch.is_tensor(pw) else torch.tensor(pw, dtype=torch.float64)
    compare(FL.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits, [x.requires_grad_(), y], dtype,
            {"pos_weight": pw}, {"pos_weight": ref_pw})


def _sign_target(y):
    return torch.where(y > 0, 1.0, -1.0).to(y.dtype)


OURS = [  # (ours, formula in torch, data kind, kwargs)
    (FL.msle_loss, lambda x, y: (torch.log1p(x.clamp(min=0)) - torch.log1p(y.clamp(min=0))) ** 2, "regression", {}),
    (FL.pseudo_huber_loss, lambda x, y, delta=1.3: delta**2 * (torch.sqrt(1 + ((x - y) / delta) ** 2) - 1),
     "regression", {"delta": 1.3}),
    (FL.log_cosh_loss, lambda x, y: torch.log(torch.cosh(x - y)), "regression", {}),
    (FL.hinge_loss, lambda x, y: (1 - _sign_target(y) * x).clamp(min=0), "binary", {}),
    (FL.squared_hinge_loss, lambda x, y: (1 - _sign_target(y) * x).clamp(min=0) ** 2, "binary", {}),
]


def _reduce(values, reduction):
    return {"none": values, "mean": values.mean(), "sum": values.sum()}[reduction]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ours,formula,kind,kwargs", OURS, ids=lambda v: getattr(v, "__name__", None))
def test_our_losses_match_their_formulas(ours, formula, kind, kwargs, reduction, dtype):
    x, y = data(kind=kind)
    compare(ours, lambda a, b: _reduce(formula(a, b), reduction), [x.requires_grad_(), y], dtype,
            {**kwargs, "reduction": reduction})


@pytest.mark.parametrize("dtype", DTYPES)
def test_rmse_is_the_root_of_the_weighted_mean_square(dtype):
    x, y = data()
    w = weight()
    compare(FL.rmse_loss, lambda a, b: torch.sqrt((w * (a - b) ** 2).mean()), [x.requires_grad_(), y], dtype,
            {"weight": w.to(dtype)})


def test_our_weighted_mean_divides_by_numel():
    x, y = data()
    w = weight()
    compare(FL.log_cosh_loss, lambda a, b: (w * torch.log(torch.cosh(a - b))).sum() / a.numel(),
            [x.requires_grad_(), y], torch.float32, {"weight": w.float()})


@pytest.mark.parametrize("ours,theirs", [(FL.mse_loss, F.mse_loss), (FL.huber_loss, F.huber_loss),
                                         (FL.l1_loss, F.l1_loss)], ids=lambda v: v.__name__)
def test_target_gradient_of_difference_losses(ours, theirs):
    x, y = data()
    compare(ours, theirs, [x.requires_grad_(), y.requires_grad_()], torch.float32)


def test_target_gradient_elsewhere_is_refused():
    x, y = data(kind="probability")
    with pytest.raises(NotImplementedError, match="target"):
        FL.binary_cross_entropy(x.float(), y.float().requires_grad_())


def test_non_contiguous_input_is_accepted():
    x, y = data((5, 7))
    compare(FL.mse_loss, F.mse_loss, [x.t().requires_grad_(), y.t()], torch.float32)


def test_bad_probability_follows_the_contract():
    x, y = data(kind="probability")
    x = x.float().clone()
    x[1, 2] = 1.5
    x.requires_grad_()
    per_element, err = FL.binary_cross_entropy(x, y.float(), reduction="none", return_error_count=True)
    assert err.item() == 1
    assert torch.isnan(per_element[1, 2]) and torch.isfinite(per_element).sum() == x.numel() - 1
    (g,) = torch.autograd.grad(per_element.nansum(), x)
    assert g[1, 2] == 0


def test_no_grad_skips_the_gradient():
    x, y = data()
    with torch.no_grad():
        loss = FL.mse_loss(x.float().requires_grad_(), y.float())
    assert loss.grad_fn is None
    torch.testing.assert_close(loss, F.mse_loss(x.float(), y.float()))


def test_grad_scale_scales_the_gradient_not_the_loss():
    x, y = data()
    x = x.float().requires_grad_()
    loss = FL.huber_loss(x, y.float(), grad_scale=8.0)
    (g,) = torch.autograd.grad(loss, x)
    ref_x = x.detach().requires_grad_()
    ref = F.huber_loss(ref_x, y.float())
    (ref_g,) = torch.autograd.grad(ref, ref_x)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(g, ref_g * 8)
