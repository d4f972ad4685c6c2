"""Fixed-step explicit integrators shared by the simulators and latent rollouts.

The steppers use only ``+`` and ``*`` on their state, so the same code
advances a NumPy array (microscopic simulators) and a batched torch tensor
(latent rollouts).
"""

import math

import numpy as np

from ._validation import check_choice, check_states

__all__ = ["integrate", "simulate", "steps", "RolloutDivergenceError", "STEPPERS"]


def _euler_step(func, y, dt):
    return y + dt * func(y)


def _rk4_step(func, y, dt):
    k1 = func(y)
    k2 = func(y + (0.5 * dt) * k1)
    k3 = func(y + (0.5 * dt) * k2)
    k4 = func(y + dt * k3)
    return y + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


STEPPERS = {"euler": _euler_step, "rk4": _rk4_step}


def get_stepper(method):
    """Return the one-step function registered under ``method``.

    Raises
    ------
    ValueError
        If ``method`` is not a registered name; the message lists the valid
        names and the closest match.
    """
    return STEPPERS[check_choice("method", method, STEPPERS)]


def n_steps_between(t_start, t_end, dt, name="t_end"):
    """Number of steps of size ``dt`` from ``t_start`` to ``t_end``.

    Raises a ``ValueError`` when the interval is not a whole number of steps
    (to 1e-6 relative), since a fixed-step integrator cannot land on it.
    """
    if not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive finite number, got {dt!r}")
    ratio = (t_end - t_start) / dt
    steps = round(ratio)
    if steps < 0 or not math.isclose(ratio, steps, rel_tol=1e-6, abs_tol=1e-6):
        raise ValueError(
            f"{name}={float(t_end):g} is not a whole number of steps "
            f"dt={float(dt):g} after {float(t_start):g}; use a dt that divides "
            "every interval"
        )
    return int(steps)


def steps(func, y0, dt, n_steps, method="rk4"):
    """Advance ``dy/dt = func(y)`` with a fixed step, yielding each new state.

    Parameters
    ----------
    func : callable
        Vector field, ``func(y) -> dy/dt`` with ``y`` of shape (batch, dim).
    y0 : ndarray or torch.Tensor of shape (batch, dim)
        Initial state (not yielded).
    dt : float
        Step size.
    n_steps : int
        Number of steps.
    method : {"rk4", "euler"}, default="rk4"
        Time stepper.

    Yields
    ------
    state after step 1, 2, ..., n_steps
    """
    step = get_stepper(method)
    y = y0
    for _ in range(n_steps):
        y = step(func, y, dt)
        yield y


def integrate(func, y0, dt, n_steps, *, method="rk4", stride=1):
    """Advance ``dy/dt = func(y)`` with a fixed step and keep every ``stride``-th
    state.

    Parameters
    ----------
    func : callable
        Vector field, ``func(y) -> dy/dt`` with ``y`` of shape (batch, dim).
    y0 : ndarray or torch.Tensor of shape (batch, dim)
        Initial states.
    dt : float
        Step size.
    n_steps : int
        Number of steps.
    method : {"rk4", "euler"}, default="rk4"
        Time stepper.
    stride : int, default=1
        Keep the state every ``stride`` steps (the initial state is always
        kept).

    Returns
    -------
    list of states
        ``n_steps // stride + 1`` states, the first being ``y0``.
    """
    get_stepper(method)
    if stride < 1 or int(stride) != stride:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    kept = [y0]
    for i, y in enumerate(steps(func, y0, dt, n_steps, method), start=1):
        if i % stride == 0:
            kept.append(y)
    return kept


class RolloutDivergenceError(FloatingPointError):
    """A latent rollout left the finite, bounded region."""


def _time_steps(t, dt):
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 1 or len(t) < 1 or not np.all(np.isfinite(t)):
        raise ValueError("t must be a 1-D array of finite times")
    if np.any(np.diff(t) <= 0):
        raise ValueError("t must be strictly increasing")
    if dt is None:
        if len(t) < 2:
            raise ValueError("dt is required when t holds a single time")
        gaps = np.diff(t)
        if not np.allclose(gaps, gaps[0], rtol=1e-6, atol=0):
            raise ValueError("t is not uniformly spaced: give the step dt explicitly")
        dt = float(gaps[0])
    counts = [
        n_steps_between(a, b, dt, name="t") for a, b in zip(t[:-1], t[1:], strict=True)
    ]
    return dt, counts


def simulate(
    model,
    X0,
    t,
    dt=None,
    method="rk4",
    on_divergence="raise",
    bound=1e3,
    return_std=False,
    return_members=False,
    verbose=False,
):
    """Roll out learned latent dynamics (``System.simulate`` is the
    microscopic simulator; this integrates the learned ``dz/dt = g(z)``).

    An ensemble (``PartialForceDynamics(n_members=k)``) is rolled out member
    by member, each with its own field, so the structure of each member
    (OnsagerNet's dissipation, GFINN's GENERIC laws) holds along its own
    trajectory; the trajectories are then averaged.

    Parameters
    ----------
    model : Pipeline ending in PartialForceDynamics, or PartialForceDynamics
        With a pipeline, ``X0`` are microscopic states encoded by the steps
        before the last; with a bare dynamics model, ``X0`` are latent states.
        The dynamics model is used through its ``module_`` (present once
        fitted), ``n_features_in_``, ``n_members_`` and
        ``member_vector_fields(z)`` (``(k, batch, d) -> (k, batch, d)``; a
        model with only ``vector_field(z)`` is rolled out as one member),
        ``device_``, ``latent_mean_`` and ``latent_scale_``.
    X0 : array-like of shape (n0, N) for a pipeline, (n0, d) otherwise
    t : array-like of shape (T,)
        Output times, strictly increasing; ``t[0]`` is the time of ``X0``.
    dt : float, optional
        Integration step; must divide every interval of ``t``. Defaults to
        the (uniform) spacing of ``t``, one step per output interval: when
        the outputs are far apart for the learned dynamics, pass a smaller
        step and check that the rollout no longer changes with it.
    method : {"rk4", "euler"}, default="rk4"
    on_divergence : {"raise", "mask"}, default="raise"
        When a trajectory (of any member) becomes non-finite or leaves the
        bound: raise :class:`RolloutDivergenceError` naming the time reached,
        or fill it with NaN from there on and go on with the others; the mean
        and the spread are then taken over the members still finite (NaN
        where none is).
    bound : float, default=1e3
        Largest allowed distance from the training data, in standard
        deviations of each latent coordinate.
    return_std : bool, default=False
        Also return the standard deviation across the members' trajectories
        (with Bessel's correction; zeros for a single model or where a
        single member is finite).
    return_members : bool, default=False
        Also return every member's trajectories.
    verbose : bool, default=False
        A progress bar over the output times (a rollout with a small ``dt``
        takes many steps per interval).

    Returns
    -------
    Z : ndarray of shape (n0, T, d), float32
        Latent trajectories (the mean over the members of an ensemble);
        ``Z[..., :d*]`` are the observables.
    Z_std : ndarray of shape (n0, T, d), float32
        Only with ``return_std=True``.
    Z_members : ndarray of shape (n_members, n0, T, d), float32
        Only with ``return_members=True`` (after ``Z_std`` when both are
        asked for).
    """
    import torch
    from sklearn.pipeline import Pipeline
    from tqdm.auto import tqdm

    check_choice("on_divergence", on_divergence, ("raise", "mask"))
    get_stepper(method)
    if isinstance(model, Pipeline):
        Z0 = np.asarray(model[:-1].transform(X0))
        dynamics = model[-1]
    else:
        dynamics = model
        Z0 = X0
    if not hasattr(dynamics, "module_"):
        raise ValueError(
            "model must be a fitted PartialForceDynamics or a fitted Pipeline "
            f"ending in one, got {type(dynamics).__name__}"
        )
    Z0 = check_states(Z0, "X0", n_features=dynamics.n_features_in_)
    dt, intervals = _time_steps(t, dt)
    device = dynamics.device_
    if hasattr(dynamics, "member_vector_fields"):
        k, member_fields = dynamics.n_members_, dynamics.member_vector_fields
    else:
        k = 1

        def member_fields(y):
            return dynamics.vector_field(y[0])[None]

    z = torch.as_tensor(Z0, device=device).expand(k, -1, -1).clone()
    centre = torch.as_tensor(dynamics.latent_mean_, device=device)
    scale = torch.as_tensor(dynamics.latent_scale_, device=device)
    times = np.asarray(t, dtype=np.float64)
    dead = torch.zeros(z.shape[:2], dtype=torch.bool, device=device)
    zero = torch.zeros((), dtype=z.dtype, device=device)

    def field(y):
        # Diverged rows are fed zeros so that they cannot poison the batch.
        return member_fields(torch.where(dead[..., None], zero, y))

    out = [z.clone()]
    with torch.no_grad():
        for j, n in enumerate(tqdm(intervals, desc="rollout", disable=not verbose)):
            for i, z_next in enumerate(steps(field, z, dt, n, method)):
                z = z_next
                bad = ~torch.isfinite(z).all(dim=-1) | (
                    ((z - centre) / scale).abs().amax(dim=-1) > bound
                )
                new = bad & ~dead
                if new.any():
                    reached = times[j] + i * dt
                    if on_divergence == "raise":
                        raise RolloutDivergenceError(
                            f"{int(new.any(dim=0).sum())} of {z.shape[1]} "
                            f"trajectories diverged after t = {reached:.6g} (step "
                            f"{i + 1} of interval [{times[j]:.6g}, "
                            f"{times[j + 1]:.6g}]"
                            + (
                                f", in {int(new.any(dim=1).sum())} of {k} members"
                                if k > 1
                                else ""
                            )
                            + "); use a smaller dt, a stabler latent_model such as "
                            "'onsager', or on_divergence='mask'"
                        )
                    dead |= new
            snapshot = z.clone()
            snapshot[dead] = float("nan")
            out.append(snapshot)
    members = torch.stack(out, dim=2).cpu().numpy()  # (k, n0, T, d)
    mean, std = _member_moments(members)
    result = (mean,)
    if return_std:
        result += (std,)
    if return_members:
        result += (members,)
    return result if len(result) > 1 else mean


def _member_moments(members):
    """Mean and standard deviation (Bessel-corrected; 0 with one finite
    member) over the finite members, NaN where none is finite.

    Parameters
    ----------
    members : ndarray of shape (k, ...)

    Returns
    -------
    mean, std : ndarray of shape (...), float32
    """
    finite = np.isfinite(members)
    count = finite.sum(axis=0)
    values = np.where(finite, members, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = values.sum(axis=0) / count
        deviation = np.where(finite, members - mean, 0.0)
        var = (deviation**2).sum(axis=0) / np.maximum(count - 1, 1)
    std = np.sqrt(var)
    std[count == 0] = np.nan
    return mean.astype(np.float32), std.astype(np.float32)
