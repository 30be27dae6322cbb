"""fusedloss for PyTorch: drop-in functional losses (``fusedloss.torch.cross_entropy`` for
``F.cross_entropy``) and their nn.Module forms, as torch.library custom ops that work under
torch.compile(fullgraph=True). The ops themselves are ``torch.ops.fusedloss.*``."""
from . import _ops  # noqa: F401  (registers torch.ops.fusedloss)
from .functional import *  # noqa: F401,F403
from .functional import __all__ as _functional_all
from .modules import *  # noqa: F401,F403
from .modules import __all__ as _modules_all

__all__ = list(_functional_all) + list(_modules_all)
