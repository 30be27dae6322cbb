"""The torch.library custom ops: one fused call computes the loss and keeps its gradient.

Three ops cover every loss on given logits: ``fusedloss::elementwise``, ``fusedloss::rowwise`` (functional, with
an autograd formula) and ``fusedloss::rowwise_inplace`` (writes the gradient over the logits; a
mutating op cannot carry a registered autograd formula, so ``functional`` wraps it in an
autograd.Function). Each returns the float32 loss, the saved gradient, and the int64 count of
invalid data values; ``rowwise`` also returns the per-row logsumexp for cross_entropy.
``fusedloss::linear_cross_entropy`` (the LM head: matmul + cross_entropy without the [N, V]
logits) returns the gradients of hidden, weight and bias from its one call.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode
from torch.utils.dlpack import to_dlpack

from .. import _fusedloss as _ext

NONE = 0  # fusedloss::Reduction::None

# Losses of r = x - y alone: the gradient w.r.t. the target is minus the one w.r.t. the input.
DIFFERENCE_LOSSES = frozenset({"mse", "mae", "l1", "rmse", "huber", "smooth_l1", "pseudo_huber", "log_cosh"})


def _dl(t: Optional[Tensor]):
    # A DLPack capsule, not the tensor: Tensor.__dlpack__ would make the legacy default stream
    # wait on the current one, which is neither needed nor wanted.
    return None if t is None else to_dlpack(t.detach())


def _launch(fn, args, device: torch.device) -> None:
    """Phase 1 + 2 of the C++ API, with the workspace from the framework's allocator.

    Tensors in ``args`` become fresh DLPack capsules per call (a capsule is consumed once). The
    CPU path uses as many threads as PyTorch does (torch.set_num_threads)."""
    def call(stream, workspace=None):
        return fn(*(_dl(a) if isinstance(a, Tensor) else a for a in args), torch.get_num_threads(), stream,
                  _dl(workspace))

    if device.type == "cuda":
        with torch.cuda.device(device):
            stream = torch.cuda.current_stream(device).cuda_stream
            need = call(stream)
            if need:  # freed on return, yet safe: the caching allocator reuses it only in stream order
                call(stream, torch.empty(need, dtype=torch.uint8, device=device))
    else:
        need = call(0)
        if need:  # linear_cross_entropy: its CPU path takes its chunk workspace from PyTorch's allocator too
            call(0, _aligned_bytes(need, 256))  # the C++ API wants a workspace 256-byte aligned


def _aligned_bytes(size: int, alignment: int) -> Tensor:
    """``size`` uint8 CPU bytes starting at a multiple of ``alignment`` (CPU tensors are only 64-aligned)."""
    raw = torch.empty(size + alignment - 1, dtype=torch.uint8)
    offset = -raw.data_ptr() % alignment
    return raw[offset:offset + size]


def rows_ok(x: Tensor) -> bool:
    """An [N, C] layout the row-wise API takes as it is: adjacent classes, row stride >= C."""
    n, c = x.shape
    return (c == 1 or x.stride(1) == 1) and (n <= 1 or x.stride(0) >= c)


def times_upstream(g: Tensor, d_loss: Tensor) -> Tensor:
    """The saved gradient (of the sum for none, else of the reduced value) times the upstream
    gradient: per element, per row ([N] against [N, C]) or once for a reduced loss."""
    # Eager CPU backward with the usual upstream 1 skips a full pass over the gradient: reading a
    # CPU scalar is no device sync. Traced code (compile, fake or proxy modes) keeps the multiply.
    if (d_loss.dim() == 0 and d_loss.device.type == "cpu" and type(d_loss) is Tensor
            and not torch.compiler.is_compiling() and _get_current_dispatch_mode() is None and d_loss.item() == 1.0):
        return g
    if d_loss.dim() == 1 and g.dim() == 2:
        d_loss = d_loss.unsqueeze(1)
    return (d_loss * g).to(g.dtype)


# --- elementwise --------------------------------------------------------------------------------

def _elementwise_outputs(input: Tensor, reduction: int, compute_grad: bool):
    loss = input.new_empty(input.shape if reduction == NONE else (), dtype=torch.float32)
    grad = torch.empty_like(input, memory_format=torch.contiguous_format) if compute_grad else input.new_empty(0)
    return loss, grad, input.new_empty((), dtype=torch.int64)


@torch.library.custom_op("fusedloss::elementwise", mutates_args=())
def elementwise(loss: str, input: Tensor, target: Tensor, weight: Optional[Tensor], pos_weight: Optional[Tensor],
                reduction: int, grad_scale: float, delta: float, beta: float, pos_weight_scalar: float,
                compute_grad: bool) -> Tuple[Tensor, Tensor, Tensor]:
    loss_out, grad, err = _elementwise_outputs(input, reduction, compute_grad)
    loss_id, _ = _ext.parse_loss(loss)
    args = (loss_id, input.contiguous(), target.contiguous(), weight, pos_weight, reduction, grad_scale, delta, beta,
            pos_weight_scalar, loss_out, grad if compute_grad else None, err)
    _launch(_ext.elementwise, args, input.device)
    return loss_out, grad, err


@elementwise.register_fake
def _(loss, input, target, weight, pos_weight, reduction, grad_scale, delta, beta, pos_weight_scalar, compute_grad):
    return _elementwise_outputs(input, reduction, compute_grad)


def _elementwise_setup(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.difference = inputs[0] in DIFFERENCE_LOSSES


def _elementwise_backward(ctx, d_loss, _d_grad, _d_err):
    (g,) = ctx.saved_tensors
    d_input = times_upstream(g, d_loss)
    d_target = -d_input if ctx.needs_input_grad[2] and ctx.difference else None
    return None, d_input, d_target, None, None, None, None, None, None, None, None


elementwise.register_autograd(_elementwise_backward, setup_context=_elementwise_setup)


# --- row-wise -----------------------------------------------------------------------------------

def _rowwise_outputs(loss: str, input: Tensor, reduction: int, compute_grad: bool):
    n, c = input.shape
    shape = ((n, c) if loss == "kl_div" else (n,)) if reduction == NONE else ()
    loss_out = input.new_empty(shape, dtype=torch.float32)
    if compute_grad:  # the C++ API writes the gradient with the input's row stride
        grad = torch.empty_strided(input.shape, input.stride(), dtype=input.dtype, device=input.device)
    else:
        grad = input.new_empty(0)
    lse = input.new_empty((n,) if loss == "cross_entropy" else (0,), dtype=torch.float32)
    return loss_out, grad, lse, input.new_empty((), dtype=torch.int64)


def _rowwise_args(loss, input, labels, target, weight, reduction, grad_scale, ignore_index, label_smoothing,
                  z_loss, softcap, log_target, temperature, loss_out, grad, lse, err):
    loss_id, _ = _ext.parse_loss(loss)
    return (loss_id, input, labels, target, weight, reduction, grad_scale, ignore_index, label_smoothing, z_loss,
            softcap, log_target, temperature, loss_out, grad, lse if lse.numel() else None, err)


@torch.library.custom_op("fusedloss::rowwise", mutates_args=())
def rowwise(loss: str, input: Tensor, labels: Optional[Tensor], target: Optional[Tensor], weight: Optional[Tensor],
            reduction: int, grad_scale: float, ignore_index: int, label_smoothing: float, z_loss: float,
            softcap: float, log_target: bool, temperature: float,
            compute_grad: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    loss_out, grad, lse, err = _rowwise_outputs(loss, input, reduction, compute_grad)
    args = _rowwise_args(loss, input, labels, target, weight, reduction, grad_scale, ignore_index, label_smoothing,
                         z_loss, softcap, log_target, temperature, loss_out, grad if compute_grad else None, lse, err)
    _launch(_ext.rowwise, args, input.device)
    return loss_out, grad, lse, err


@rowwise.register_fake
def _(loss, input, labels, target, weight, reduction, grad_scale, ignore_index, label_smoothing, z_loss, softcap,
      log_target, temperature, compute_grad):
    return _rowwise_outputs(loss, input, reduction, compute_grad)


def _rowwise_setup(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.mark_non_differentiable(output[1], output[2])


def _rowwise_backward(ctx, d_loss, _d_grad, _d_lse, _d_err):
    (g,) = ctx.saved_tensors
    return (None, times_upstream(g, d_loss)) + (None,) * 12


rowwise.register_autograd(_rowwise_backward, setup_context=_rowwise_setup)


@torch.library.custom_op("fusedloss::rowwise_inplace", mutates_args=("input",))
def rowwise_inplace(loss: str, input: Tensor, labels: Optional[Tensor], target: Optional[Tensor],
                    weight: Optional[Tensor], reduction: int, grad_scale: float, ignore_index: int,
                    label_smoothing: float, z_loss: float, softcap: float, log_target: bool,
                    temperature: float) -> Tuple[Tensor, Tensor, Tensor]:
    loss_out, _, lse, err = _rowwise_outputs(loss, input, reduction, False)
    args = _rowwise_args(loss, input, labels, target, weight, reduction, grad_scale, ignore_index, label_smoothing,
                         z_loss, softcap, log_target, temperature, loss_out, input, lse, err)
    _launch(_ext.rowwise, args, input.device)
    return loss_out, lse, err


@rowwise_inplace.register_fake
def _(loss, input, labels, target, weight, reduction, grad_scale, ignore_index, label_smoothing, z_loss, softcap,
      log_target, temperature):
    loss_out, _, lse, err = _rowwise_outputs(loss, input, reduction, False)
    return loss_out, lse, err


# --- linear_cross_entropy ----------------------------------------------------------------------

def _linear_ce_outputs(hidden: Tensor, weight: Tensor, bias: Optional[Tensor], reduction: int,
                       grad_hidden: bool, grad_weight: bool, grad_bias: bool):
    n = hidden.shape[0]
    loss = hidden.new_empty((n,) if reduction == NONE else (), dtype=torch.float32)
    # The C++ API writes grad_hidden with hidden's row stride.
    g_hidden = (torch.empty_strided(hidden.shape, hidden.stride(), dtype=hidden.dtype, device=hidden.device)
                if grad_hidden else hidden.new_empty(0))
    g_weight = torch.empty_like(weight, memory_format=torch.contiguous_format) if grad_weight else weight.new_empty(0)
    g_bias = torch.empty_like(bias) if grad_bias and bias is not None else hidden.new_empty(0)
    lse = hidden.new_empty((n,), dtype=torch.float32)
    return loss, g_hidden, g_weight, g_bias, lse, hidden.new_empty((), dtype=torch.int64)


@torch.library.custom_op("fusedloss::linear_cross_entropy", mutates_args=())
def linear_cross_entropy(hidden: Tensor, weight: Tensor, bias: Optional[Tensor], labels: Tensor,
                         class_weight: Optional[Tensor], reduction: int, grad_scale: float, ignore_index: int,
                         label_smoothing: float, z_loss: float, softcap: float, memory_budget: int,
                         max_chunk_rows: int, grad_hidden: bool, grad_weight: bool,
                         grad_bias: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(loss, grad_hidden, grad_weight, grad_bias, lse, error count); a gradient not asked for is empty."""
    outs = _linear_ce_outputs(hidden, weight, bias, reduction, grad_hidden, grad_weight, grad_bias)
    loss, g_hidden, g_weight, g_bias, lse, err = outs
    args = (hidden, weight, bias, labels, class_weight, reduction, grad_scale, ignore_index, label_smoothing, z_loss,
            softcap, memory_budget, max_chunk_rows, loss, lse, g_hidden if grad_hidden else None,
            g_weight if grad_weight else None, g_bias if grad_bias and bias is not None else None, err)
    _launch(_ext.linear_cross_entropy, args, hidden.device)
    return outs


@linear_cross_entropy.register_fake
def _(hidden, weight, bias, labels, class_weight, reduction, grad_scale, ignore_index, label_smoothing, z_loss,
      softcap, memory_budget, max_chunk_rows, grad_hidden, grad_weight, grad_bias):
    return _linear_ce_outputs(hidden, weight, bias, reduction, grad_hidden, grad_weight, grad_bias)


def _linear_ce_setup(ctx, inputs, output):
    hidden, weight, bias, labels, class_weight, reduction = inputs[:6]
    ctx.options = inputs[5:13]
    ctx.computed = (inputs[13], inputs[14], inputs[15] and bias is not None)
    # reduction none: the weight / bias gradients are recomputed in backward (see there), so the inputs are kept.
    kept = (hidden, weight, bias, labels, class_weight) if reduction == NONE else (None,) * 5
    ctx.save_for_backward(*output[1:4], *kept)
    ctx.mark_non_differentiable(*output[1:])


def _weight_grads_per_row(hidden, weight, bias, labels, class_weight, options, d_loss):
    """Σ_n d_loss[n]·∂loss_n/∂(weight, bias) for reduction none, where d_loss is per row and the
    forward's one fused sum over rows cannot be rescaled. Recomputes the logits chunk by chunk
    (within the forward's memory budget) with the same row-wise cross_entropy op; fp32 sums."""
    reduction, grad_scale, ignore_index, label_smoothing, z_loss, softcap, memory_budget, max_chunk_rows = options
    n, v = hidden.shape[0], weight.shape[0]
    w32 = weight.float()
    b32 = None if bias is None else bias.float()
    g_weight, g_bias = torch.zeros_like(w32), torch.zeros(v, dtype=torch.float32, device=weight.device)
    chunk = max_chunk_rows or max(1, memory_budget // (3 * 4 * v))  # logits, their gradient, its scaled copy
    for start in range(0, n, chunk):
        rows = slice(start, min(n, start + chunk))
        h32 = hidden[rows].float()
        z = torch.addmm(b32, h32, w32.T) if b32 is not None else h32 @ w32.T
        dz = rowwise("cross_entropy", z, labels[rows], None, class_weight, NONE, grad_scale, ignore_index,
                     label_smoothing, z_loss, softcap, False, 1.0, True)[1]
        dz = dz * d_loss[rows].float().unsqueeze(1)
        g_weight.addmm_(dz.T, h32)
        g_bias += dz.sum(0)
    return g_weight.to(weight.dtype), (None if bias is None else g_bias.to(bias.dtype))


def _linear_ce_backward(ctx, d_loss, *_):
    """The saved gradients times the upstream one. With reduction none d_loss is per row: exact for
    grad_hidden (row n depends on row n's loss only), while grad_weight / grad_bias sum over rows
    and are recomputed (_weight_grads_per_row)."""
    g_hidden, g_weight, g_bias, *kept = ctx.saved_tensors
    need = ctx.needs_input_grad
    per_row = ctx.options[0] == NONE and (need[1] or need[2])
    if per_row:
        g_weight, g_bias = _weight_grads_per_row(*kept, ctx.options, d_loss)
    grads = []
    for i, (name, g) in enumerate((("hidden", g_hidden), ("weight", g_weight), ("bias", g_bias))):
        if not need[i] or (per_row and i > 0):  # recomputed ones already carry d_loss
            grads.append(g if need[i] else None)
        elif not ctx.computed[i]:  # None would read as a zero gradient
            raise RuntimeError(f"fusedloss linear_cross_entropy: the {name} gradient was not computed in forward "
                               f"(grad_{name}=False)")
        else:
            grads.append(times_upstream(g, d_loss))
    return tuple(grads) + (None,) * 13


linear_cross_entropy.register_autograd(_linear_ce_backward, setup_context=_linear_ce_setup)
