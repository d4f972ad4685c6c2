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
            f"{name}={t_end!r} is not a whole number of steps dt={dt!r} "
            f"after {t_start!r}"
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


def simulate(model, X0, t, dt=None, method="rk4", on_divergence="raise", bound=1e3):
    """Roll out learned latent dynamics (``System.simulate`` is the
    microscopic simulator; this integrates the learned ``dz/dt = g(z)``).

    Parameters
    ----------
    model : Pipeline ending in PartialForceDynamics, or PartialForceDynamics
        With a pipeline, ``X0`` are microscopic states encoded by the steps
        before the last; with a bare dynamics model, ``X0`` are latent states.
        The dynamics model is used through its ``n_features_in_``,
        ``vector_field(z)``, ``device_``, ``latent_mean_`` and
        ``latent_scale_``.
    X0 : array-like of shape (n0, N) for a pipeline, (n0, d) otherwise
    t : array-like of shape (T,)
        Output times, strictly increasing; ``t[0]`` is the time of ``X0``.
    dt : float, optional
        Integration step; must divide every interval of ``t``. Defaults to
        the (uniform) spacing of ``t``.
    method : {"rk4", "euler"}, default="rk4"
    on_divergence : {"raise", "mask"}, default="raise"
        When a trajectory becomes non-finite or leaves the bound: raise
        :class:`RolloutDivergenceError` naming the time reached, or fill it
        with NaN from there on and go on with the others.
    bound : float, default=1e3
        Largest allowed distance from the training data, in standard
        deviations of each latent coordinate.

    Returns
    -------
    Z : ndarray of shape (n0, T, d), float32
        Latent trajectories; ``Z[..., :d*]`` are the observables.
    """
    import torch
    from sklearn.pipeline import Pipeline

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
    z = torch.as_tensor(Z0, device=device)
    centre = torch.as_tensor(dynamics.latent_mean_, device=device)
    scale = torch.as_tensor(dynamics.latent_scale_, device=device)
    times = np.asarray(t, dtype=np.float64)
    dead = torch.zeros(len(z), dtype=torch.bool, device=device)
    zero = torch.zeros((), dtype=z.dtype, device=device)

    def field(y):
        # Diverged rows are fed zeros so that they cannot poison the batch.
        return dynamics.vector_field(torch.where(dead[:, None], zero, y))

    out = [z.clone()]
    with torch.no_grad():
        for k, n in enumerate(intervals):
            for i, z_next in enumerate(steps(field, z, dt, n, method)):
                z = z_next
                bad = ~torch.isfinite(z).all(dim=1) | (
                    ((z - centre) / scale).abs().amax(dim=1) > bound
                )
                new = bad & ~dead
                if new.any():
                    reached = times[k] + i * dt
                    if on_divergence == "raise":
                        raise RolloutDivergenceError(
                            f"{int(new.sum())} of {len(z)} trajectories diverged "
                            f"after t = {reached:.6g} (step {i + 1} of interval "
                            f"[{times[k]:.6g}, {times[k + 1]:.6g}]); use a smaller "
                            "dt, a stabler latent_model such as 'onsager', or "
                            "on_divergence='mask'"
                        )
                    dead |= new
            snapshot = z.clone()
            snapshot[dead] = float("nan")
            out.append(snapshot)
    return torch.stack(out, dim=1).cpu().numpy()
