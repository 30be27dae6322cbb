"""Invalid calls raise Python exceptions that carry the library's status text."""
import re

import pytest
import torch

import fusedloss.torch as FL

x, y = torch.randn(4, 5), torch.randn(4, 5)
labels = torch.tensor([0, 1, 2, 3])


@pytest.mark.parametrize("call,error,text", [
    (lambda: FL.rmse_loss(x, y, reduction="sum"), ValueError, "fusedloss rmse: invalid argument"),
    (lambda: FL.huber_loss(x, y, delta=0.0), ValueError, "fusedloss huber: invalid argument"),
    (lambda: FL.smooth_l1_loss(x, y, beta=-1.0), ValueError, "fusedloss smooth_l1: invalid argument"),
    (lambda: FL.binary_cross_entropy_with_logits(x, y, pos_weight=-2.0), ValueError, "invalid argument"),
    (lambda: FL.cross_entropy(x, labels, label_smoothing=1.5), ValueError, "fusedloss cross_entropy: invalid argument"),
    (lambda: FL.cross_entropy(x, labels, z_loss=-1.0), ValueError, "invalid argument"),
    (lambda: FL.cross_entropy(x, labels, reduction="batchmean"), ValueError, "invalid argument"),
    (lambda: FL.kl_div_logits(x, y, temperature=0.0), ValueError, "fusedloss kl_div_logits: invalid argument"),
    (lambda: FL.mse_loss(x, y, grad_scale=float("inf")), ValueError, "invalid argument"),
    (lambda: FL.mse_loss(x, y, reduction="avg"), ValueError, "unknown reduction 'avg'"),
    (lambda: FL.mse_loss(x, y[:3]), ValueError, "target shape"),
    (lambda: FL.mse_loss(x, y.half()), ValueError, "target must have the input's dtype"),
    (lambda: FL.mse_loss(x.double(), y.double()), TypeError, "input must be float32, float16 or bfloat16"),
    (lambda: FL.cross_entropy(x, labels.to(torch.int16)), TypeError, "class labels must be int64 or int32"),
    (lambda: FL.cross_entropy(x, labels[:3]), ValueError, "target labels must be a contiguous [N] vector"),
    (lambda: FL.cross_entropy(x, labels, weight=torch.ones(4)), ValueError, "weight must be"),
    (lambda: FL.cross_entropy(x.reshape(2, 2, 5), labels), ValueError, "input must be 2-D"),
    (lambda: FL.cross_entropy(x, torch.randn(4, 6)), ValueError, "target shape"),
    (lambda: FL.cross_entropy(x, labels, size_average=True), ValueError, "use reduction"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_invalid_call_raises(call, error, text):
    with pytest.raises(error, match=re.escape(text)):
        call()
