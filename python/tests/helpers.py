"""Shared comparison helpers: fusedloss in the test dtype against a float64 reference."""
import torch

DTYPES = [torch.float32, torch.bfloat16]
# The CPU path rounds once from double; the backward multiply rounds once more (fp16: the two
# half-ulp roundings stay within one eps, 9.8e-4).
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-3}


def assert_close(actual, expected, dtype):
    actual, expected = actual.detach().double(), expected.detach().double()
    finite = expected[torch.isfinite(expected)]
    scale = finite.abs().max().item() if finite.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=TOL[dtype], atol=TOL[dtype] * scale / 10 + 1e-30,
                               equal_nan=True)


def upstream(loss):
    """A non-trivial upstream gradient: random per element/row for none, 0.75 for a scalar."""
    if loss.dim() == 0:
        return torch.tensor(0.75, dtype=loss.dtype)
    return torch.rand(loss.shape, generator=torch.Generator().manual_seed(7)).to(loss.dtype) + 0.5


def loss_and_grads(fn, inputs, dtype, grad_output=None, **kwargs):
    """fn(*inputs) in `dtype` (float64 for the reference); gradients w.r.t. inputs that require grad,
    for `grad_output` (default: upstream(loss))."""
    args = [t.detach().to(dtype).requires_grad_(t.requires_grad) if t.is_floating_point() else t for t in inputs]
    loss = fn(*args, **kwargs)
    wrt = [a for a in args if a.requires_grad]
    grad_output = upstream(loss) if grad_output is None else grad_output.to(loss.dtype)
    grads = torch.autograd.grad(loss, wrt, grad_output) if wrt else ()
    return loss, grads


def compare(ours, reference, inputs, dtype, ours_kwargs=None, ref_kwargs=None):
    """Loss and autograd gradients of `ours` in `dtype` against `reference` in float64 on the same
    (dtype-rounded) inputs."""
    rounded = [t.detach().to(dtype).requires_grad_(t.requires_grad) if t.is_floating_point() else t for t in inputs]
    loss, grads = loss_and_grads(ours, rounded, dtype, **(ours_kwargs or {}))
    # The reference gets the very upstream values ours got (rounded to `dtype`), so that their
    # rounding is not counted as ours.
    ref_loss, ref_grads = loss_and_grads(reference, rounded, torch.float64, upstream(loss), **(ref_kwargs or {}))
    assert loss.dtype == dtype and loss.shape == ref_loss.shape
    assert_close(loss, ref_loss, dtype)
    for g, r in zip(grads, ref_grads):
        assert g.dtype == dtype
        assert_close(g, r, dtype)
    return loss, grads
