"""Trajectory errors (paper Eq. 43) and the p-aware scorer."""

from numbers import Integral

import numpy as np
from sklearn.metrics import r2_score

__all__ = [
    "mean_relative_error",
    "rollout_error",
    "band_coverage",
    "make_macro_scorer",
    "make_rollout_scorer",
    "greedy_ensemble",
    "select_members",
]


def mean_relative_error(z_true, z_pred, squared=True, mask=None):
    """Mean relative trajectory error of paper Eq. 43.

    For each trajectory, ``sum_t ||z_true(t) - z_pred(t)||^2 / sum_t
    ||z_true(t)||^2``, averaged over trajectories. The paper's published
    tables used unsquared norms, ``sum_t ||dz|| / sum_t ||z||``: pass
    ``squared=False`` to compare with them.

    Parameters
    ----------
    z_true, z_pred : array-like of shape (n_trajectories, n_times, k) or (n_times, k)
        Observables along true and predicted trajectories.
    squared : bool, default=True
    mask : array-like of bool, shape (n_trajectories, n_times) or (n_times,), optional
        The times to score on each trajectory (all by default), e.g. the
        snapshots of an Allen-Cahn trajectory before its torus vanishes.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> z = np.ones((2, 3, 1))
    >>> mean_relative_error(z, 1.1 * z, squared=False)
    0.1...
    """
    z_true = np.asarray(z_true, dtype=np.float64)
    z_pred = np.asarray(z_pred, dtype=np.float64)
    if z_true.shape != z_pred.shape:
        raise ValueError(
            f"z_true and z_pred must have the same shape, got {z_true.shape} and "
            f"{z_pred.shape}"
        )
    if z_true.ndim == 2:
        z_true, z_pred = z_true[None], z_pred[None]
    if z_true.ndim != 3:
        raise ValueError(
            "z_true must have shape (n_trajectories, n_times, k) or (n_times, k), "
            f"got {z_true.shape}"
        )
    if not np.all(np.isfinite(z_true)):
        raise ValueError("z_true contains NaN or inf")
    err = np.linalg.norm(z_true - z_pred, axis=-1)
    ref = np.linalg.norm(z_true, axis=-1)
    if squared:
        err, ref = err**2, ref**2
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape not in (err.shape, err.shape[1:]):
            raise ValueError(
                f"mask must have shape {err.shape} or {err.shape[1:]} "
                f"(trajectories, times), got {mask.shape}"
            )
        mask = np.broadcast_to(mask, err.shape)
        if not mask.any(axis=1).all():
            raise ValueError(
                f"mask keeps no time of trajectory {int(np.argmin(mask.any(axis=1)))}: "
                "its relative error is undefined"
            )
        err, ref = np.where(mask, err, 0.0), np.where(mask, ref, 0.0)
    denominator = ref.sum(axis=1)
    if np.any(denominator == 0):
        raise ValueError(
            f"true trajectory {int(np.argmax(denominator == 0))} is identically zero"
            + ("" if mask is None else " at the times the mask keeps")
            + ": relative error undefined"
        )
    # A diverged (NaN) prediction counts as an infinite error, not a skipped one.
    ratio = np.where(np.isnan(err.sum(axis=1)), np.inf, err.sum(axis=1) / denominator)
    return float(ratio.mean())


def rollout_error(
    pipeline,
    t,
    trajectories,
    dt=None,
    squared=False,
    return_members=False,
    verbose=False,
):
    """Eq. 43 error of a fitted pipeline's latent rollouts on the observables.

    The true latent trajectories are the encoded microscopic ones; the
    predicted ones start from the encoded initial states and use latent RK4
    with step ``dt``. The paper's tables use the unsquared form.

    Parameters
    ----------
    pipeline : Pipeline of (encoder, PartialForceDynamics)
    t : array-like of shape (T,)
        Times of the trajectories' states.
    trajectories : array-like of shape (n_trajectories, T, N)
        Microscopic test trajectories.
    dt : float, optional
        Latent integration step; defaults to the spacing of ``t`` (see
        :func:`skmacro.simulate` on choosing it).
    squared : bool, default=False
    return_members : bool, default=False
        Also return each ensemble member's own rollouts (``Z_pred`` is
        their mean).
    verbose : bool, default=False
        A progress bar over the rollout's output times.

    Returns
    -------
    error : float
    Z_true, Z_pred : ndarray of shape (n_trajectories, T, d)
        A rollout that diverged, in any member of an ensemble, is NaN from
        there on and counts as an infinite error (``simulate`` would have
        raised; ``simulate(..., on_divergence="mask")`` averages the
        members still finite instead).
    Z_members : ndarray of shape (n_members, n_trajectories, T, d)
        Only with ``return_members=True``: each member's own rollouts, NaN
        from where that member diverged.
    """
    from .integrate import simulate

    if not hasattr(trajectories, "shape"):
        trajectories = np.asarray(trajectories)
    if len(trajectories.shape) != 3:
        raise ValueError(
            "trajectories must have shape (n_trajectories, n_times, n_features), "
            f"got {trajectories.shape}"
        )
    encoder = pipeline[:-1]
    # One trajectory at a time: the test set may live on disk (a zarr array
    # has a shape but no len).
    n = trajectories.shape[0]
    Z_true = np.stack(
        [np.asarray(encoder.transform(trajectories[i])) for i in range(n)]
    )
    X0 = np.stack([np.asarray(trajectories[i, 0]) for i in range(n)])
    Z_pred, Z_members = simulate(
        pipeline,
        X0,
        t,
        dt=dt,
        on_divergence="mask",
        return_members=True,
        verbose=verbose,
    )
    Z_pred = _diverged_where_any_member(Z_pred, Z_members)
    d_star = pipeline[0].n_observables_
    error = mean_relative_error(
        Z_true[..., :d_star], Z_pred[..., :d_star], squared=squared
    )
    if return_members:
        return error, Z_true, Z_pred, Z_members
    return error, Z_true, Z_pred


def _diverged_where_any_member(z_mean, z_members):
    """An ensemble's mean rollout, NaN from the first time any member's
    rollout diverged: the model's rollout diverged there (``simulate``
    would have raised); the mean of the members still finite would hide
    it.

    Parameters
    ----------
    z_mean : ndarray of shape (n_trajectories, T, k)
    z_members : ndarray of shape (n_members, n_trajectories, T, d)
        NaN from where each member diverged (``simulate(...,
        on_divergence="mask", return_members=True)``); ``d >= k``.

    Returns
    -------
    ndarray of shape (n_trajectories, T, k)
    """
    diverged = np.isnan(z_members).any(axis=(0, 3))  # (n_trajectories, T)
    diverged = np.logical_or.accumulate(diverged, axis=1)
    return np.where(diverged[..., None], np.nan, z_mean)


def greedy_ensemble(z_true, z_members, *, mask=None, squared=False):
    """Order ensemble members greedily by the Eq. 43 error of their mean
    (forward ensemble selection, Caruana et al., ICML 2004).

    The first member has the smallest error of its own; each next one is
    the member whose addition gives the mean prediction of the members so
    far the smallest error. A member whose prediction is NaN (a diverged
    rollout) makes every mean that contains it infinitely wrong, so it
    comes last. The members may come from different models, for instance
    the rollouts of the observables (the first d* latent coordinates, the
    same in every encoder) by pipelines with different encoders.

    Parameters
    ----------
    z_true : array-like of shape (n_trajectories, n_times, k)
        True observables.
    z_members : array-like of shape (n_members, n_trajectories, n_times, k)
        Each member's predicted observables.
    mask : array-like of bool, shape (n_trajectories, n_times), optional
        The states scored (all by default).
    squared : bool, default=False
        Squared norms in Eq. 43.

    Returns
    -------
    order : ndarray of int of shape (n_members,)
        The members in the order chosen.
    errors : ndarray of shape (n_members,)
        ``errors[i]``: the error of the mean of the first ``i + 1`` members
        of ``order``.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.ones((1, 4, 1))
    >>> members = np.stack([1.2 * z, 0.95 * z, 1.1 * z])
    >>> order, errors = greedy_ensemble(z, members)
    >>> order.tolist()
    [1, 2, 0]
    """
    z_true = np.asarray(z_true, dtype=np.float64)
    z_members = np.asarray(z_members, dtype=np.float64)
    if z_members.ndim != z_true.ndim + 1 or z_members.shape[1:] != z_true.shape:
        raise ValueError(
            f"z_members must have shape (n_members, {', '.join(map(str, z_true.shape))}"
            f") to match z_true, got {z_members.shape}"
        )
    k = len(z_members)
    if k == 0:
        raise ValueError("z_members has no member")
    order, errors, total = [], [], np.zeros_like(z_true)
    for size in range(1, k + 1):
        candidates = [m for m in range(k) if m not in order]
        scores = [
            mean_relative_error(
                z_true, (total + z_members[m]) / size, squared=squared, mask=mask
            )
            for m in candidates
        ]
        best = candidates[int(np.argmin(scores))]
        order.append(best)
        errors.append(min(scores))
        total = total + z_members[best]
    return np.asarray(order), np.asarray(errors)


def select_members(
    pipeline, t, trajectories, n_members=None, *, dt=None, mask=None, squared=False
):
    """Keep the members of a fitted ensemble whose mean rollout best matches
    known trajectories (greedy forward ensemble selection, Caruana et al.,
    ICML 2004).

    Every member is rolled out once from the trajectories' encoded initial
    states (:func:`rollout_error`), the members are ordered by
    :func:`greedy_ensemble` on the observables, and a prefix of that order
    is kept. The training loss ranks fields by their velocities at single
    states, which need not rank their rollouts; this ranks them by the
    rollouts themselves. The trajectories may be training ones: what it
    needs is their states along time, not their forces. Hold some back to
    see how well the choice carries over. To choose among the members of
    several pipelines (different encoders of the same observables), pass
    their observables' rollouts to :func:`greedy_ensemble`.

    Parameters
    ----------
    pipeline : Pipeline of (encoder, PartialForceDynamics)
        Fitted; its dynamics an ensemble (``n_members_ >= 2`` to choose).
    t : array-like of shape (T,)
        Times of the trajectories' states.
    trajectories : array-like of shape (n_trajectories, T, N)
        Microscopic trajectories the rollouts are scored on.
    n_members : int or None, default=None
        Members to keep, the first ``n_members`` of the greedy order; None
        keeps the prefix of that order whose mean rollout has the smallest
        error (the fewest members on a tie).
    dt : float, optional
        Latent integration step (default: the spacing of ``t``).
    mask : array-like of bool, shape (n_trajectories, T), optional
        The states scored (all by default), as in :func:`mean_relative_error`.
    squared : bool, default=False
        Squared norms in Eq. 43 (the paper's tables use unsquared ones).

    Returns
    -------
    selected : Pipeline
        A new pipeline of the same fitted encoder steps (shared, not copied)
        and the dynamics' :meth:`~skmacro.PartialForceDynamics.keep_members`
        copy; ``pipeline`` is left as it is.
    members : ndarray of int
        The kept members, in the order chosen.
    errors : ndarray of shape (k,)
        For the ensemble's ``k`` members, ``errors[i]``: the error of the
        mean rollout of the first ``i + 1`` members of the greedy order (the
        whole order, whatever ``n_members``).

    Raises
    ------
    RolloutDivergenceError
        When every member's rollout diverged.
    """
    from sklearn.pipeline import Pipeline
    from sklearn.utils.validation import check_is_fitted

    from .dynamics import PartialForceDynamics
    from .integrate import RolloutDivergenceError

    if not isinstance(pipeline, Pipeline) or not isinstance(
        pipeline[-1], PartialForceDynamics
    ):
        raise TypeError(
            "select_members() needs a fitted Pipeline of an encoder and a "
            f"PartialForceDynamics, got {type(pipeline).__name__}"
        )
    dynamics = pipeline[-1]
    check_is_fitted(dynamics, "module_")
    k = dynamics.n_members_
    if n_members is not None and (
        isinstance(n_members, bool)
        or not isinstance(n_members, Integral)
        or not 1 <= n_members <= k
    ):
        raise ValueError(
            f"n_members must be None or an int in [1, {k}] (the ensemble's "
            f"members), got {n_members!r}"
        )
    _, Z_true, _, Z_members = rollout_error(
        pipeline, t, trajectories, dt=dt, return_members=True
    )
    d_star = pipeline[0].n_observables_
    order, errors = greedy_ensemble(
        Z_true[..., :d_star], Z_members[..., :d_star], mask=mask, squared=squared
    )
    if not np.isfinite(errors[0]):
        raise RolloutDivergenceError(
            f"the rollouts of all {k} members diverged on the given trajectories: "
            "no member can be chosen"
        )
    n_keep = int(np.argmin(errors)) + 1 if n_members is None else n_members
    members = np.asarray(order[:n_keep])
    selected = Pipeline(
        [*pipeline.steps[:-1], (pipeline.steps[-1][0], dynamics.keep_members(members))],
        memory=pipeline.memory,
        verbose=pipeline.verbose,
    )
    return selected, members, errors


def band_coverage(z_true, z_pred, z_std, n_std=2.0):
    """Fraction of true values inside the band ``z_pred +- n_std * z_std``.

    For an ensemble's rollouts (``simulate(..., return_std=True)``), a
    calibrated spread covers about 95% of the true values at ``n_std=2``
    (were the errors Gaussian). A NaN prediction (a diverged rollout) counts
    as not covering its value.

    Parameters
    ----------
    z_true, z_pred, z_std : array-like of the same shape
        True values, predicted means and predicted standard deviations.
    n_std : float, default=2.0
        Half-width of the band in standard deviations.

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> band_coverage([0.0, 1.0, 5.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    0.666...
    """
    z_true = np.asarray(z_true, dtype=np.float64)
    z_pred = np.asarray(z_pred, dtype=np.float64)
    z_std = np.asarray(z_std, dtype=np.float64)
    if not (z_true.shape == z_pred.shape == z_std.shape):
        raise ValueError(
            "z_true, z_pred and z_std must have the same shape, got "
            f"{z_true.shape}, {z_pred.shape} and {z_std.shape}"
        )
    if z_true.size == 0:
        raise ValueError("z_true is empty: coverage undefined")
    with np.errstate(invalid="ignore"):
        inside = np.abs(z_true - z_pred) <= n_std * z_std
    return float(np.mean(inside))


class _MacroVelocityScorer:
    """Callable ``scorer(estimator, X, F)`` for ``scoring=`` (see
    :func:`make_macro_scorer`)."""

    def __init__(self, metric):
        self.metric = metric

    def __call__(self, estimator, X, F, **kwargs):
        from sklearn.pipeline import Pipeline

        if not isinstance(estimator, Pipeline):
            raise TypeError(
                "make_macro_scorer() scores a fitted Pipeline of a "
                "ClosureAutoencoder and a PartialForceDynamics, got "
                f"{type(estimator).__name__}"
            )
        Z = estimator[:-1].transform(X)
        y, g = estimator[-1].observable_velocities(Z, F, **kwargs)
        if self.metric == "r2":
            return r2_score(y, g)
        return -float(np.mean(np.sum((y - g) ** 2, axis=1)))

    def __repr__(self):
        return f"make_macro_scorer(metric={self.metric!r})"


def make_macro_scorer(metric="r2"):
    """Scorer of the observables' velocity from partial forces, for
    ``GridSearchCV(scoring=...)`` and ``cross_validate``.

    It compares the first ``d*`` outputs ``g*(z)`` of the latent model with
    the Horvitz-Thompson estimate ``sum_{i in I} w_i phi*'_i(x) f_i`` of the
    observables' velocity ``dz*/dt``. Why this is fair across encoders: the
    observables ``phi*`` are fixed (no trainable parameters), so the target is
    the same for every pipeline, whatever its closure or ``lambda_cond``, and
    the estimate is unbiased, so ``E||y_hat - g*||^2 = ||dz*/dt - g*||^2 +
    (a term of the data alone)``: the ranking of two pipelines is that of
    their true macroscopic errors. A loss on the whole latent space (L_x,p,
    L_z) is not comparable across encoders, since each defines its own
    closure coordinates.

    Parameters
    ----------
    metric : {"r2", "neg_mean_squared_error"}, default="r2"
        ``"r2"`` is the estimators' default ``score``; the squared error is
        summed over the observables and averaged over configurations.

    Returns
    -------
    callable
        ``scorer(pipeline, X, F)``, larger is better.
    """
    if metric not in ("r2", "neg_mean_squared_error"):
        raise ValueError(
            f"metric={metric!r} is not one of ('r2', 'neg_mean_squared_error')"
        )
    return _MacroVelocityScorer(metric)


class _RolloutScorer:
    """Callable ``scorer(pipeline, X, y=None)`` for ``scoring=`` (see
    :func:`make_rollout_scorer`)."""

    def __init__(self, t, dt, squared):
        self.t, self.dt, self.squared = t, dt, squared

    def __call__(self, estimator, X, y=None, **kwargs):
        from sklearn.pipeline import Pipeline

        if not isinstance(estimator, Pipeline):
            raise TypeError(
                "make_rollout_scorer() scores a fitted Pipeline of an encoder and "
                f"a PartialForceDynamics, got {type(estimator).__name__}"
            )
        if not hasattr(X, "shape"):
            X = np.asarray(X)
        T = len(self.t)
        if len(X.shape) != 2 or X.shape[0] % T:
            raise ValueError(
                f"the rows of X must be whole trajectories of len(t) = {T} states "
                f"each, one after the other; got {tuple(X.shape)} (put the test "
                "trajectories in the test fold, e.g. with PredefinedSplit)"
            )
        n, N = X.shape
        error, _, _ = rollout_error(
            estimator, self.t, X.reshape(n // T, T, N), dt=self.dt, squared=self.squared
        )
        return -error

    def __repr__(self):
        return (
            f"make_rollout_scorer(t=<{len(self.t)} times>, dt={self.dt!r}, "
            f"squared={self.squared!r})"
        )


def make_rollout_scorer(t, *, dt=None, squared=False):
    """Scorer of a pipeline's latent rollouts against whole test trajectories
    (the negative Eq. 43 error), for ``GridSearchCV(scoring=...)``.

    The rows a search hands the scorer must be whole microscopic trajectories
    sampled at the times ``t``, one after the other (trajectory-major):
    ``n_trajectories * len(t)`` rows. Each is encoded, its first state rolled
    out by the learned latent dynamics (:func:`rollout_error`), and the
    observables compared along the trajectory. Put the test trajectories in
    the test fold of a ``sklearn.model_selection.PredefinedSplit``, and give
    their rows forces (partial ones, or NaN: the scorer does not read them)
    so that ``X`` and ``F`` have the same rows. Refit with ``refit=False``
    (or on another metric): a refit would train on the test rows.

    Unlike the p-aware score (:func:`make_macro_scorer`), which needs only
    partial forces at single configurations, this score needs ground-truth
    trajectories; it measures what the paper's tables report.

    Parameters
    ----------
    t : array-like of shape (T,)
        Times of the states of each test trajectory, strictly increasing.
    dt : float, optional
        Latent integration step; must divide every interval of ``t``.
        Defaults to the (uniform) spacing of ``t`` (see
        :func:`skmacro.simulate` on choosing it).
    squared : bool, default=False
        Squared norms in Eq. 43; the paper's tables use unsquared ones.

    Returns
    -------
    callable
        ``scorer(pipeline, X, y=None)``: minus the mean relative error on
        the observables, larger is better (``-inf`` if a rollout diverged).

    Examples
    --------
    >>> import numpy as np
    >>> scorer = make_rollout_scorer(np.arange(300) * 0.1, dt=0.01)
    >>> scorer
    make_rollout_scorer(t=<300 times>, dt=0.01, squared=False)
    """
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 1 or len(t) < 2 or not np.all(np.isfinite(t)):
        raise ValueError(f"t must be a 1-D array of at least 2 finite times, got {t!r}")
    if np.any(np.diff(t) <= 0):
        raise ValueError("t must be strictly increasing")
    if dt is not None and not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive finite number or None, got {dt!r}")
    return _RolloutScorer(t, dt, bool(squared))
