"""fusedloss.compute: the framework-neutral entry point on NumPy / DLPack arrays."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fusedloss

rng = np.random.default_rng(3)


def reference(fn, x, *args, **kwargs):
    """torch's loss and gradient of the (reduced) loss, in float64."""
    xt = torch.from_numpy(x).double().requires_grad_()
    loss = fn(xt, *args, **kwargs)
    (g,) = torch.autograd.grad(loss.sum(), xt)
    return loss.detach().numpy(), g.numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_elementwise_on_numpy(dtype):
    x, y = rng.standard_normal((6, 5)).astype(dtype), rng.standard_normal((6, 5)).astype(dtype)
    result = fusedloss.compute("huber", x, y, delta=0.5, reduction="sum")
    loss, grad = reference(F.huber_loss, x, torch.from_numpy(y).double(), delta=0.5, reduction="sum")
    assert result.loss.dtype == np.float32 and result.loss.shape == () and result.grad.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-3
    np.testing.assert_allclose(result.loss, loss, rtol=tol)
    np.testing.assert_allclose(result.grad, grad, rtol=tol, atol=tol)
    assert result.error_count == 0 and result.lse is None


def test_cross_entropy_on_padded_rows_and_a_dlpack_producer():
    padded = rng.standard_normal((5, 12)).astype(np.float32)
    x = padded[:, :8]  # row stride 12 ≥ C = 8: read in place
    y = torch.tensor([0, 7, 3, -100, 2])  # any __dlpack__ producer on the CPU
    result = fusedloss.compute("cross_entropy", x, y, label_smoothing=0.1)
    loss, grad = reference(F.cross_entropy, x, y, label_smoothing=0.1)
    np.testing.assert_allclose(result.loss, loss, rtol=1e-5)
    np.testing.assert_allclose(result.grad, grad, rtol=1e-5, atol=1e-7)
    assert result.grad.strides == x.strides
    np.testing.assert_allclose(result.lse, torch.logsumexp(torch.from_numpy(x), 1).numpy(), rtol=1e-6)


def test_bad_labels_are_counted_not_raised():
    x = rng.standard_normal((3, 4)).astype(np.float32)
    result = fusedloss.compute("nll", x, np.array([0, 9, 1]), reduction="none")
    assert result.error_count == 1 and np.isnan(result.loss[1]) and np.isfinite(result.loss[[0, 2]]).all()
    assert (result.grad[1] == 0).all()


def test_default_reduction_is_the_losses_own():
    s, t = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    batchmean = fusedloss.compute("kl_div_logits", s, t, grad=False)
    total = fusedloss.compute("kl_div_logits", s, t, reduction="sum", grad=False)
    assert batchmean.grad is None
    np.testing.assert_allclose(batchmean.loss, total.loss / 4, rtol=1e-6)


def test_errors_carry_the_status_text():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="fusedloss rmse: invalid argument"):
        fusedloss.compute("rmse", x, x, reduction="sum")
    with pytest.raises(ValueError, match="unknown loss 'cross_entropi'"):
        fusedloss.compute("cross_entropi", x, x)
