"""The paper's experimental protocols as library code: data at a scale, the
equal-force-budget ``L_z`` subset, fit, roll out, score, and the paper's
published numbers. The command line (``skmacro``), the benchmarks and the
examples all run on these.

Modules
-------
published
    The paper's tables and figures as numbers.
protocol
    What every experiment shares: a frozen encoder, several dynamics models
    on one force budget, rollouts scored by Eq. 43.
predator_prey, lennard_jones
    The protocols of each system.
"""

from . import lennard_jones, predator_prey, published
from .protocol import (
    DynamicsRun,
    EnsembleRollouts,
    RunResult,
    compare_losses,
    ensemble_rollouts,
    equal_budget_rows,
    member_errors,
)

__all__ = [
    "DynamicsRun",
    "EnsembleRollouts",
    "RunResult",
    "compare_losses",
    "ensemble_rollouts",
    "equal_budget_rows",
    "lennard_jones",
    "member_errors",
    "predator_prey",
    "published",
]
