"""fusedloss: loss and gradient in one pass, on any DLPack array (NumPy here, PyTorch in fusedloss.torch).

``compute`` is the framework-neutral entry point: CPU arrays in (anything ``numpy.from_dlpack``
takes), NumPy arrays out. PyTorch users want ``fusedloss.torch`` instead (autograd, CUDA streams,
torch.compile).
"""
from typing import NamedTuple, Optional

import numpy as np

from . import _fusedloss as _ext
from ._fusedloss import cuda_available

__all__ = ["compute", "Result", "cuda_available", "REDUCTIONS"]

#: Reduction names → the C++ enum (fusedloss::Reduction); None picks the loss's default.
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2, "batchmean": 3, None: 4}


class Result(NamedTuple):
    loss: np.ndarray  #: float32; shape () when reduced
    grad: Optional[np.ndarray]  #: gradient of the reduced loss × grad_scale, input's dtype and shape
    lse: Optional[np.ndarray]  #: cross_entropy: float32 [N] logsumexp per row
    error_count: int  #: invalid data values (bad labels, BCE probabilities outside [0, 1])


def reduction_code(reduction) -> int:
    if reduction not in REDUCTIONS:
        raise ValueError(f"fusedloss: unknown reduction {reduction!r} (none, mean, sum, batchmean)")
    return REDUCTIONS[reduction]


def _array(x):
    if x is None or isinstance(x, np.ndarray):
        return x
    return np.from_dlpack(x)


def compute(loss: str, input, target, *, weight=None, reduction=None, grad: bool = True,
            grad_scale: float = 1.0, delta: float = 1.0, beta: float = 1.0, pos_weight=1.0,
            ignore_index: int = -100, label_smoothing: float = 0.0, z_loss: float = 0.0,
            softcap: float = 0.0, log_target: bool = False, temperature: float = 1.0) -> Result:
    """Loss ``loss`` (a fusedloss name: "mse", "cross_entropy", ...) of ``input`` against ``target``.

    Elementwise losses take same-shaped input/target (and ``weight``); ``pos_weight`` is a scalar
    or a per-column vector over the last dimension. Row-wise losses take an [N, C] input whose
    rows may be padded (row stride >= C); ``target`` holds class labels (integer array) or a dense
    [N, C] target, and ``weight`` the [C] class weights. Invalid data does not raise: it is
    counted in ``error_count`` (see the README's edge-case contract). Arrays the C++ API cannot
    take as they are (non-contiguous elementwise data, float64 class weights) are copied.
    """
    loss_id, elementwise = _ext.parse_loss(loss)
    x, t, w = _array(input), _array(target), _array(weight)
    red = reduction_code(reduction)
    err = np.zeros((), np.int64)
    if elementwise:
        x, t = np.ascontiguousarray(x), np.ascontiguousarray(t)
        w = None if w is None else np.ascontiguousarray(np.broadcast_to(w, x.shape), dtype=x.dtype)
        pw = np.ascontiguousarray(pos_weight, np.float32) if np.ndim(pos_weight) else None
        out = np.empty(x.shape if red == REDUCTIONS["none"] else (), np.float32)
        g = np.empty_like(x) if grad else None
        _ext.elementwise(loss_id, x, t, w, pw, red, grad_scale, delta, beta,
                         1.0 if pw is not None else float(pos_weight), out, g, err, 0, 0, None)
        return Result(out, g, None, int(err))
    if x.ndim != 2 or x.strides[1] != x.itemsize:
        x = np.ascontiguousarray(x)
    labels = t if np.issubdtype(t.dtype, np.integer) else None
    dense = None if labels is not None else t
    if dense is not None and dense.strides != x.strides:
        x, dense = np.ascontiguousarray(x), np.ascontiguousarray(dense)
    if w is not None:
        w = np.ascontiguousarray(w, np.float32)
    n, c = x.shape
    out = np.empty((n, c) if loss == "kl_div" and red == 0 else (n,) if red == 0 else (), np.float32)
    # The gradient shares the input's row stride, as the C++ API writes it.
    g = np.empty((n, x.strides[0] // x.itemsize if n > 1 else c), x.dtype)[:, :c] if grad else None
    lse = np.empty(n, np.float32) if loss == "cross_entropy" else None
    _ext.rowwise(loss_id, x, labels, dense, w, red, grad_scale, ignore_index, label_smoothing, z_loss,
                 softcap, log_target, temperature, out, g, lse, err, 0, 0, None)
    return Result(out, g, lse, int(err))
