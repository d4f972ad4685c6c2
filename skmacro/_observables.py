"""What an encoder asks of the user's observables callable: that it is
torch-differentiable, maps rows to rows, has names, and pickles."""

import pickle

import torch

from .systems import System


def count_observables(observables, x):
    """Check ``observables`` on a few states and return d*.

    The callable must map a float tensor (batch, N) to a tensor (batch, d*)
    through torch operations, so that its Jacobian exists; one computed with
    NumPy fails here with a message that says so, instead of deep inside a
    Jacobian.

    Parameters
    ----------
    observables : callable
    x : ndarray of shape (n_probe, N)
        A few states.

    Returns
    -------
    int
    """
    name = getattr(observables, "__qualname__", repr(observables))
    hint = (
        f"observables={name} must be a torch-differentiable callable mapping a "
        "tensor (batch, n_features) to a tensor (batch, d*), built from torch "
        "operations (not NumPy)"
    )
    probe = torch.as_tensor(x).detach().clone().requires_grad_(True)
    try:
        out = observables(probe)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"it returned {type(out).__name__}, not a torch.Tensor")
        if out.ndim != 2 or out.shape[0] != len(probe):
            raise ValueError(
                f"it returned shape {tuple(out.shape)} for {len(probe)} states"
            )
        if not out.requires_grad:
            raise TypeError("its output does not depend on its input through autograd")
        torch.func.jacrev(lambda rows: observables(rows).sum(0))(probe.detach())
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{hint}: {exc}") from exc
    return int(out.shape[1])


def observable_names(observables, n_observables, names=None):
    """Names of the observables: ``names`` if given, else the
    ``observable_names`` of the :class:`~skmacro.systems.System` whose bound
    method ``observables`` is, else ``z*_0, z*_1, ...``.

    Parameters
    ----------
    observables : callable or None
    n_observables : int
    names : sequence of str or None

    Returns
    -------
    list of str
    """
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != n_observables:
            raise ValueError(
                f"observable_names has {len(names)} entries but the observables "
                f"return {n_observables} columns"
            )
        return names
    system = getattr(observables, "__self__", None)
    if isinstance(system, System) and len(system.observable_names) == n_observables:
        return list(system.observable_names)
    return [f"z*_{i}" for i in range(n_observables)]


def check_picklable(observables):
    """Raise a ``PicklingError`` that says how to fix an observables callable
    that cannot be pickled (needed for saving and for parallel search)."""
    try:
        pickle.dumps(observables)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise pickle.PicklingError(
            f"observables={observables!r} cannot be pickled ({exc}). "
            "Lambdas and functions defined inside other functions cannot be "
            "pickled (nor sent to GridSearchCV(n_jobs>1) workers): define it "
            "with `def` at module level, or pass a system's bound method "
            "such as `PredatorPrey().observables`."
        ) from exc
