"""nn.Module wrappers, one per functional loss, holding its options (tensors as buffers)."""
import inspect

from torch import nn

from . import functional as F


class _Loss(nn.Module):
    """Binds constructor arguments like the functional's parameters after (input, target)."""

    fn = None

    def __init__(self, *args, **kwargs):
        super().__init__()
        bound = inspect.signature(type(self).fn).bind_partial(None, None, *args, **kwargs)
        self._options = [name for name in bound.arguments if name not in ("input", "target")]
        for name in self._options:
            value = bound.arguments[name]
            if name in ("weight", "pos_weight"):
                self.register_buffer(name, value)  # follows .to(device)
            else:
                setattr(self, name, value)

    def forward(self, input, target):
        return type(self).fn(input, target, **{name: getattr(self, name) for name in self._options})

    def extra_repr(self):
        return ", ".join(f"{name}={getattr(self, name)!r}" for name in self._options
                         if name not in ("weight", "pos_weight"))


def _module(name: str, fn):
    return type(name, (_Loss,), {"fn": staticmethod(fn), "__doc__": f"Module form of fusedloss.torch.{fn.__name__}.",
                                 "__module__": __name__})


MSELoss = _module("MSELoss", F.mse_loss)
L1Loss = _module("L1Loss", F.l1_loss)
HuberLoss = _module("HuberLoss", F.huber_loss)
SmoothL1Loss = _module("SmoothL1Loss", F.smooth_l1_loss)
BCELoss = _module("BCELoss", F.binary_cross_entropy)
BCEWithLogitsLoss = _module("BCEWithLogitsLoss", F.binary_cross_entropy_with_logits)
CrossEntropyLoss = _module("CrossEntropyLoss", F.cross_entropy)
NLLLoss = _module("NLLLoss", F.nll_loss)
KLDivLoss = _module("KLDivLoss", F.kl_div)
RMSELoss = _module("RMSELoss", F.rmse_loss)
MSLELoss = _module("MSLELoss", F.msle_loss)
PseudoHuberLoss = _module("PseudoHuberLoss", F.pseudo_huber_loss)
LogCoshLoss = _module("LogCoshLoss", F.log_cosh_loss)
HingeLoss = _module("HingeLoss", F.hinge_loss)
SquaredHingeLoss = _module("SquaredHingeLoss", F.squared_hinge_loss)
KLDivLogitsLoss = _module("KLDivLogitsLoss", F.kl_div_logits)


class LinearCrossEntropyLoss(nn.Module):
    """Module form of fusedloss.torch.linear_cross_entropy: forward(hidden, weight, target, bias=None).

    The LM head's weight stays the caller's parameter (e.g. ``model.lm_head.weight``); the module
    holds the loss options (``class_weight`` as a buffer)."""

    def __init__(self, *, class_weight=None, **options):
        super().__init__()
        inspect.signature(F.linear_cross_entropy).bind(None, None, None, **options)  # rejects unknown options
        self.register_buffer("class_weight", class_weight)
        self.options = options

    def forward(self, hidden, weight, target, bias=None):
        return F.linear_cross_entropy(hidden, weight, target, bias, class_weight=self.class_weight, **self.options)

    def extra_repr(self):
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())

__all__ = [name for name, value in list(globals().items()) if isinstance(value, type) and issubclass(value, _Loss)
           and value is not _Loss] + ["LinearCrossEntropyLoss"]
