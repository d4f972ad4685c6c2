"""skmacro: learn the dynamics of macroscopic observables from partial
microscopic forces (Chen & Li, "Learning Macroscopic Dynamics from Partial
Microscopic Observations"), as scikit-learn estimators on skorch/PyTorch."""

from ._net import DivergenceWarning
from .autoencoder import ClosureAutoencoder, ConditioningWarning
from .dynamics import PartialForceDynamics
from .encoders import LatentArray
from .integrate import RolloutDivergenceError, simulate

__version__ = "0.1.0"

__all__ = [
    "ClosureAutoencoder",
    "ConditioningWarning",
    "DivergenceWarning",
    "LatentArray",
    "PartialForceDynamics",
    "RolloutDivergenceError",
    "simulate",
    "__version__",
]
