"""Functional losses with torch.nn.functional's names, arguments and defaults, plus fusedloss's own.

Each call runs the loss and its gradient in one fused pass and keeps the gradient for backward.
Beyond PyTorch's arguments every loss takes ``grad_scale`` (multiplies the gradient, not the
loss: a loss scale for mixed precision). Differences from PyTorch are listed in the README's
"From PyTorch" section.
"""
from typing import Optional, Union

import torch
from torch import Tensor

from .. import reduction_code
from . import _ops

__all__ = [
    "mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "cross_entropy", "nll_loss", "kl_div", "rmse_loss", "msle_loss",
    "pseudo_huber_loss", "log_cosh_loss", "hinge_loss", "squared_hinge_loss", "kl_div_logits",
    "linear_cross_entropy",
]


def _no_legacy(size_average, reduce):
    if size_average is not None or reduce is not None:
        raise ValueError("fusedloss: size_average and reduce are not supported; use reduction")


def _wants_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _no_target_grad(loss: str, target: Tensor):
    if torch.is_grad_enabled() and target.requires_grad:
        raise NotImplementedError(f"fusedloss {loss}: no gradient w.r.t. the target; pass target.detach()")


def _elementwise(loss: str, input: Tensor, target: Tensor, reduction: str, weight: Optional[Tensor] = None,
                 pos_weight: Union[Tensor, float, None] = None, grad_scale: float = 1.0, delta: float = 1.0,
                 beta: float = 1.0, weighted_mean_by_sum: bool = False, return_error_count: bool = False):
    if loss not in _ops.DIFFERENCE_LOSSES:
        _no_target_grad(loss, target)
    if target.shape != input.shape:
        raise ValueError(f"fusedloss {loss}: target shape {tuple(target.shape)} != input shape {tuple(input.shape)}")
    # The elementwise API reads dense arrays: other layouts and broadcast weights are copied.
    input, target = input.contiguous(), target.contiguous()
    if weight is not None:
        weight = weight.to(input.dtype).expand_as(input).contiguous()
    pos_weight_scalar = 1.0
    if isinstance(pos_weight, Tensor):  # over the last dimension, as PyTorch broadcasts it
        columns = input.shape[-1] if input.dim() else 1
        pos_weight = pos_weight.to(torch.float32).expand(columns).contiguous()
    elif pos_weight is not None:
        pos_weight_scalar, pos_weight = float(pos_weight), None
    # PyTorch's weighted mse/l1 mean divides by Σw (its huber's by numel, like the library): take
    # the sum and divide here (autograd carries the 1/Σw into the saved gradient; no host sync).
    by_weight_sum = weighted_mean_by_sum and weight is not None and reduction == "mean"
    loss_out, _, err = _ops.elementwise(loss, input, target, weight, pos_weight,
                                        reduction_code("sum" if by_weight_sum else reduction), grad_scale, delta,
                                        beta, pos_weight_scalar, _wants_grad(input, target))
    if by_weight_sum:
        loss_out = loss_out / weight.sum(dtype=torch.float32)
    return (loss_out.to(input.dtype), err) if return_error_count else loss_out.to(input.dtype)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None, *, grad_scale=1.0):
    _no_legacy(size_average, reduce)
    return _elementwise("mse", input, target, reduction, weight, grad_scale=grad_scale, weighted_mean_by_sum=True)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None, *, grad_scale=1.0):
    _no_legacy(size_average, reduce)
    return _elementwise("l1", input, target, reduction, weight, grad_scale=grad_scale, weighted_mean_by_sum=True)


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None, *, grad_scale=1.0):
    return _elementwise("huber", input, target, reduction, weight, grad_scale=grad_scale, delta=delta)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0, *, weight=None,
                   grad_scale=1.0):
    _no_legacy(size_average, reduce)
    return _elementwise("smooth_l1", input, target, reduction, weight, grad_scale=grad_scale, beta=beta)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction="mean", *,
                         return_error_count=False, grad_scale=1.0):
    """Probabilities outside [0, 1] (or NaN) give loss NaN and gradient 0 instead of an error;
    ``return_error_count`` also returns their int64 count (reading it is the only sync)."""
    _no_legacy(size_average, reduce)
    return _elementwise("bce", input, target, reduction, weight, grad_scale=grad_scale,
                        return_error_count=return_error_count)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None, reduction="mean",
                                     pos_weight=None, *, grad_scale=1.0):
    """``pos_weight``: a tensor broadcast over the last dimension (as PyTorch's), or a float."""
    _no_legacy(size_average, reduce)
    return _elementwise("bce_with_logits", input, target, reduction, weight, pos_weight, grad_scale)


def rmse_loss(input, target, reduction="mean", weight=None, *, grad_scale=1.0):
    """sqrt(Σ w r² / numel); ``reduction`` must be "mean"."""
    return _elementwise("rmse", input, target, reduction, weight, grad_scale=grad_scale)


def msle_loss(input, target, reduction="mean", weight=None, *, grad_scale=1.0):
    """(log1p(max(x, 0)) − log1p(max(y, 0)))²."""
    return _elementwise("msle", input, target, reduction, weight, grad_scale=grad_scale)


def pseudo_huber_loss(input, target, reduction="mean", delta=1.0, weight=None, *, grad_scale=1.0):
    """δ²(sqrt(1 + (r/δ)²) − 1)."""
    return _elementwise("pseudo_huber", input, target, reduction, weight, grad_scale=grad_scale, delta=delta)


def log_cosh_loss(input, target, reduction="mean", weight=None, *, grad_scale=1.0):
    """log cosh(x − y)."""
    return _elementwise("log_cosh", input, target, reduction, weight, grad_scale=grad_scale)


def hinge_loss(input, target, reduction="mean", weight=None, *, grad_scale=1.0):
    """max(0, 1 − t·x) with t = +1 where target > 0, else −1."""
    return _elementwise("hinge", input, target, reduction, weight, grad_scale=grad_scale)


def squared_hinge_loss(input, target, reduction="mean", weight=None, *, grad_scale=1.0):
    """max(0, 1 − t·x)² with t = +1 where target > 0, else −1."""
    return _elementwise("squared_hinge", input, target, reduction, weight, grad_scale=grad_scale)


def _rows(loss: str, input: Tensor, target: Tensor):
    """The [N, C] input (and dense target) in a layout the row-wise API takes; copies only if not."""
    if input.dim() != 2:
        raise ValueError(f"fusedloss {loss}: input must be 2-D [N, C], got shape {tuple(input.shape)} "
                         "(for [N, C, d...] use input.movedim(1, -1).reshape(-1, C))")
    if target.is_floating_point():
        _no_target_grad(loss, target)
        if target.shape != input.shape:
            raise ValueError(f"fusedloss {loss}: target shape {tuple(target.shape)} != input shape "
                             f"{tuple(input.shape)}")
        if not _ops.rows_ok(input) or (input.shape[0] > 1 and target.stride() != input.stride()):
            input, target = input.contiguous(), target.contiguous()
    elif not _ops.rows_ok(input):
        input = input.contiguous()
    return input, target


def _rowwise(loss: str, input: Tensor, target: Tensor, weight: Optional[Tensor], reduction: Optional[str],
             grad_scale: float, ignore_index: int = -100, label_smoothing: float = 0.0, z_loss: float = 0.0,
             softcap: float = 0.0, log_target: bool = False, temperature: float = 1.0,
             inplace_backward: bool = False):
    """(loss in the input's dtype, float32 lse, int64 error count)."""
    input, target = _rows(loss, input, target)
    labels, dense = (None, target) if target.is_floating_point() else (target.contiguous(), None)
    if weight is not None:
        weight = weight.to(torch.float32).contiguous()
    options = (weight, reduction_code(reduction), grad_scale, ignore_index, label_smoothing, z_loss, softcap,
               log_target, temperature)
    if inplace_backward and _wants_grad(input):
        loss_out, lse, err = _InplaceRowwise.apply(loss, input, labels, dense, *options)
    else:
        loss_out, _, lse, err = _ops.rowwise(loss, input, labels, dense, *options, _wants_grad(input))
    return loss_out.to(input.dtype), lse, err


class _InplaceRowwise(torch.autograd.Function):
    """Liger-style: the logits' memory receives their gradient, so no [N, C] buffer is allocated.

    Anything else that saved the logits for its own backward will raise autograd's "modified by
    an inplace operation" error, which is the intended guard.
    """

    @staticmethod
    def forward(ctx, loss, input, labels, target, *options):
        loss_out, lse, err = _ops.rowwise_inplace(loss, input, labels, target, *options)
        ctx.save_for_backward(input)
        ctx.mark_non_differentiable(lse, err)
        return loss_out, lse, err

    @staticmethod
    def backward(ctx, d_loss, _d_lse, _d_err):
        (g,) = ctx.saved_tensors
        return (None, _ops.times_upstream(g, d_loss)) + (None,) * 11


def _result(loss, lse, err, return_lse: bool, return_error_count: bool):
    extra = ((lse,) if return_lse else ()) + ((err,) if return_error_count else ())
    return (loss,) + extra if extra else loss


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                  label_smoothing=0.0, *, z_loss=0.0, softcap=0.0, return_lse=False, return_error_count=False,
                  inplace_backward=False, grad_scale=1.0):
    """PyTorch's cross_entropy on [N, C] logits, with class-index (int64/int32) or probability targets.

    Ours: ``z_loss`` (adds z_loss·lse² per row), ``softcap`` (logits → softcap·tanh(z/softcap)
    first), ``return_lse`` (also the float32 [N] per-row logsumexp), ``return_error_count`` (also
    the int64 count of labels outside [0, C) that are not ignore_index; such rows get loss NaN and
    gradient 0 instead of an error, and reading the count is the only sync), ``inplace_backward``
    (the logits are overwritten by their gradient: the input is destroyed), ``grad_scale``.
    """
    _no_legacy(size_average, reduce)
    loss, lse, err = _rowwise("cross_entropy", input, target, weight, reduction, grad_scale, ignore_index,
                              label_smoothing, z_loss, softcap, inplace_backward=inplace_backward)
    return _result(loss, lse, err, return_lse, return_error_count)


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean", *,
             return_error_count=False, grad_scale=1.0):
    """PyTorch's nll_loss on [N, C] log-probabilities; bad labels as in cross_entropy."""
    _no_legacy(size_average, reduce)
    loss, lse, err = _rowwise("nll", input, target, weight, reduction, grad_scale, ignore_index)
    return _result(loss, lse, err, False, return_error_count)


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False, *, grad_scale=1.0):
    """PyTorch's kl_div on [N, C]; exactly 0 where the target probability is 0 (PyTorch: NaN at input −inf)."""
    _no_legacy(size_average, reduce)
    return _rowwise("kl_div", input, target, None, reduction, grad_scale, log_target=log_target)[0]


def kl_div_logits(input, target, reduction="batchmean", temperature=1.0, *, grad_scale=1.0):
    """Distillation: T²·KL(softmax(target/T) ‖ softmax(input/T)) per row, from student and teacher logits."""
    return _rowwise("kl_div_logits", input, target, None, reduction, grad_scale, temperature=temperature)[0]


def linear_cross_entropy(hidden, weight, target, bias=None, *, class_weight=None, ignore_index=-100,
                         reduction="mean", label_smoothing=0.0, z_loss=0.0, softcap=0.0, memory_budget=256 << 20,
                         max_chunk_rows=0, return_lse=False, return_error_count=False, grad_scale=1.0):
    """``cross_entropy(hidden @ weight.T + bias, target)`` without the [N, V] logits (the LM head and its loss).

    hidden ``[N, H]`` (rows may be padded), weight ``[V, H]`` (nn.Linear's), bias ``[V]``, target
    ``[N]`` int64/int32 class indices; all three float tensors in one dtype (float32, float16,
    bfloat16). One fused call, in row chunks whose fp32 logits fit ``memory_budget`` bytes of
    workspace, gives the loss and the gradients of hidden, weight and bias (fp32-accumulated,
    bitwise reproducible); backward only scales them. Options as ``cross_entropy`` (``class_weight``
    is its ``weight``); softcap acts on the logits with the bias. ``max_chunk_rows`` caps the chunk.
    With ``reduction="none"`` the upstream gradient is per row: grad_hidden still comes from the
    fused call, while the weight / bias gradients (sums over rows) are recomputed in backward,
    chunk by chunk within ``memory_budget`` (one more matmul pass over the logits).
    """
    what = "fusedloss linear_cross_entropy"
    for name, t in (("hidden", hidden), ("weight", weight), ("bias", bias)):
        if t is not None and t.dim() != (1 if name == "bias" else 2):
            raise ValueError(f"{what}: {name} must be {'1-D [V]' if name == 'bias' else '2-D'}, "
                             f"got shape {tuple(t.shape)}")
    if target.is_floating_point():
        raise TypeError(f"{what}: target must hold class indices (int64 or int32), got {target.dtype}")
    if not _ops.rows_ok(hidden):
        hidden = hidden.contiguous()
    weight = weight.contiguous()
    bias = None if bias is None else bias.contiguous()
    if class_weight is not None:
        class_weight = class_weight.to(torch.float32).contiguous()
    # reduction none: backward recomputes the weight / bias gradients for its per-row grad_output.
    wants = [_wants_grad(hidden)] + [reduction != "none" and _wants_grad(t) for t in (weight, bias)]
    loss, _, _, _, lse, err = _ops.linear_cross_entropy(
        hidden, weight, bias, target.contiguous(), class_weight, reduction_code(reduction), grad_scale, ignore_index,
        label_smoothing, z_loss, softcap, int(memory_budget), int(max_chunk_rows), *wants)
    return _result(loss.to(hidden.dtype), lse, err, return_lse, return_error_count)
