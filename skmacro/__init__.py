"""skmacro: learn the dynamics of macroscopic observables from partial
microscopic forces (Chen & Li, "Learning Macroscopic Dynamics from Partial
Microscopic Observations"), as scikit-learn estimators on skorch/PyTorch."""

from .autoencoder import ClosureAutoencoder, ConditioningWarning, LatentArray
from .dynamics import PartialForceDynamics
from .integrate import RolloutDivergenceError, simulate

__version__ = "0.1.0"

__all__ = [
    "ClosureAutoencoder",
    "ConditioningWarning",
    "LatentArray",
    "PartialForceDynamics",
    "RolloutDivergenceError",
    "simulate",
    "__version__",
]
