"""The optimisers' old home: everything now lives in ``nnx.optim``."""

from .optim import *  # noqa: F401,F403
from .optim import DECAY_TYPES, SGD, Optimizer, SGDMomentum, __all__  # noqa: F401
