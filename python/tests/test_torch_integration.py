"""The ops as PyTorch sees them: opcheck, torch.compile without graph breaks, nn.Modules, CUDA streams."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fusedloss
import fusedloss.torch as FL
from helpers import assert_close

gen = torch.Generator().manual_seed(2)
MEAN, NONE, SUM, BATCHMEAN = (fusedloss.REDUCTIONS[r] for r in ("mean", "none", "sum", "batchmean"))


def rand(*shape, requires_grad=False):
    return torch.randn(*shape, generator=gen).requires_grad_(requires_grad)


def elementwise_args(loss, reduction):
    x, y = rand(6, 4, requires_grad=True), rand(6, 4)
    weight, pos_weight = None, None
    if loss == "bce":
        x, y = torch.sigmoid(x).detach().requires_grad_(), torch.rand(6, 4, generator=gen)
    if loss == "bce_with_logits":
        y, weight, pos_weight = (y > 0).float(), torch.rand(6, 4, generator=gen), torch.rand(4, generator=gen) + 0.5
    return (loss, x, y, weight, pos_weight, reduction, 1.0, 0.8, 0.5, 1.0, True)


ELEMENTWISE = ["mse", "l1", "rmse", "msle", "huber", "smooth_l1", "pseudo_huber", "log_cosh", "hinge",
               "squared_hinge", "bce", "bce_with_logits"]


@pytest.mark.parametrize("loss", ELEMENTWISE)
def test_opcheck_elementwise(loss):
    for reduction in ([MEAN] if loss == "rmse" else [NONE, SUM]):
        torch.library.opcheck(torch.ops.fusedloss.elementwise.default, elementwise_args(loss, reduction))


def rowwise_args(case):
    x = rand(5, 6, requires_grad=True)
    labels, target, weight, reduction = None, None, None, MEAN
    if case == "cross_entropy":
        labels, weight = torch.tensor([0, 5, -100, 2, 3]), torch.rand(6, generator=gen) + 0.1
    elif case == "cross_entropy_padded":
        x = torch.randn(5, 9, generator=gen)[:, :6].requires_grad_()
        labels, reduction = torch.tensor([1, 5, 2, 2, 0]), NONE
    elif case == "cross_entropy_probabilities":
        target, reduction = torch.softmax(rand(5, 6), 1), SUM
    elif case == "nll":
        x = torch.log_softmax(x, 1).detach().requires_grad_()
        labels, reduction = torch.tensor([0, 5, 1, 2, 3]), NONE
    elif case == "kl_div":
        x = torch.log_softmax(x, 1).detach().requires_grad_()
        target, reduction = torch.softmax(rand(5, 6), 1), NONE
    elif case == "kl_div_logits":
        target, reduction = rand(5, 6), BATCHMEAN
    loss = case.split("_padded")[0].split("_probabilities")[0]
    return (loss, x, labels, target, weight, reduction, 1.0, -100, 0.1 if loss == "cross_entropy" else 0.0,
            1e-3 if loss == "cross_entropy" else 0.0, 0.0, False, 2.0)


ROWWISE = ["cross_entropy", "cross_entropy_padded", "cross_entropy_probabilities", "nll", "kl_div", "kl_div_logits"]


@pytest.mark.parametrize("case", ROWWISE)
def test_opcheck_rowwise(case):
    torch.library.opcheck(torch.ops.fusedloss.rowwise.default, rowwise_args(case) + (True,))


@pytest.mark.parametrize("case", ["cross_entropy", "kl_div_logits"])
def test_opcheck_rowwise_inplace(case):
    args = rowwise_args(case)
    torch.library.opcheck(torch.ops.fusedloss.rowwise_inplace.default, (args[0], args[1].detach()) + args[2:])


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(12, 32), nn.Tanh(), nn.Linear(32, 10))
        self.head = nn.Linear(32, 3)

    def features(self, x):
        return self.body[1](self.body[0](x))


def step(model, x, y, r, ce, mse, **ce_options):
    h = model.features(x)
    return ce(model.body[2](h), y, label_smoothing=0.1, **ce_options) + mse(model.head(h), r)


@pytest.mark.parametrize("inplace_backward", [False, True])
def test_compiled_model_has_no_graph_breaks_and_matches_torch(inplace_backward):
    """Both op kinds inside one torch.compile(fullgraph=True) graph, forward and backward."""
    x, y, r = rand(16, 12), torch.randint(0, 10, (16,), generator=gen), rand(16, 3)
    model = Model()
    torch._dynamo.reset()
    compiled = torch.compile(lambda *a: step(model, *a, FL.cross_entropy, FL.mse_loss,
                                             inplace_backward=inplace_backward), fullgraph=True)
    grads = []
    for fn in (compiled, lambda *a: step(model, *a, F.cross_entropy, F.mse_loss)):
        model.zero_grad()
        loss = fn(x, y, r)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert_close(grads[0][0], grads[1][0], torch.float32)
    for ours, theirs in zip(grads[0][1], grads[1][1]):
        assert_close(ours, theirs, torch.float32)


MODULE_DATA = {  # module → (input, target)
    "bce": lambda: (torch.rand(4, 3, generator=gen), torch.rand(4, 3, generator=gen)),
    "rows": lambda: (rand(4, 3), torch.tensor([0, 2, 1, 1])),
    "distributions": lambda: (torch.log_softmax(rand(4, 3), 1), torch.softmax(rand(4, 3), 1)),
    "logits": lambda: (rand(4, 3), rand(4, 3)),
}
MODULES = [(FL.MSELoss, "logits"), (FL.L1Loss, "logits"), (FL.HuberLoss, "logits"), (FL.SmoothL1Loss, "logits"),
           (FL.BCELoss, "bce"), (FL.BCEWithLogitsLoss, "bce"), (FL.CrossEntropyLoss, "rows"), (FL.NLLLoss, "rows"),
           (FL.KLDivLoss, "distributions"), (FL.RMSELoss, "logits"), (FL.MSLELoss, "logits"),
           (FL.PseudoHuberLoss, "logits"), (FL.LogCoshLoss, "logits"), (FL.HingeLoss, "logits"),
           (FL.SquaredHingeLoss, "logits"), (FL.KLDivLogitsLoss, "logits")]


@pytest.mark.parametrize("module,data", MODULES, ids=lambda v: getattr(v, "__name__", v))
def test_module_is_its_functional(module, data):
    x, y = MODULE_DATA[data]()
    reduction = "mean" if module is FL.RMSELoss else "sum"
    torch.testing.assert_close(module(reduction=reduction)(x, y), module.fn(x, y, reduction=reduction))


def test_module_takes_torch_arguments_and_moves_its_weight():
    w = torch.rand(3, generator=gen, dtype=torch.float64) + 0.1
    x, y = MODULE_DATA["rows"]()
    ours = FL.CrossEntropyLoss(w, label_smoothing=0.2, reduction="sum").float()
    assert ours.weight.dtype == torch.float32 and "label_smoothing=0.2" in repr(ours)
    assert_close(ours(x, y), nn.CrossEntropyLoss(w.float(), label_smoothing=0.2, reduction="sum")(x, y),
                 torch.float32)


needs_cuda = pytest.mark.skipif(not (torch.cuda.is_available() and fusedloss.cuda_available()),
                                reason="no CUDA device, or the extension was built without FUSEDLOSS_PY_CUDA=1")


@needs_cuda
def test_cuda_path_never_syncs_the_host_and_matches_torch():
    x = torch.randn(64, 1000, device="cuda", requires_grad=True)
    y = torch.randint(0, 1000, (64,), device="cuda")
    y[3] = 5000  # a bad label is counted on the device, not raised
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss, err = FL.cross_entropy(x, y, reduction="none", return_error_count=True)
        loss.nansum().backward()
        elementwise = FL.huber_loss(x, torch.zeros_like(x))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert err.item() == 1
    ok = torch.arange(64, device="cuda") != 3
    ref_x = x.detach().requires_grad_()
    F.cross_entropy(ref_x[ok], y[ok], reduction="sum").backward()
    assert_close(x.grad[ok], ref_x.grad[ok], torch.float32)
    assert_close(elementwise, F.huber_loss(x, torch.zeros_like(x)), torch.float32)
