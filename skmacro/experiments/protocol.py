"""The protocol every experiment of the paper shares: one frozen encoder,
several dynamics models trained on the same force budget, each rolled out
from the test trajectories' initial states and scored (Eq. 43)."""

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from sklearn.pipeline import Pipeline

from ..dynamics import PartialForceDynamics
from ..integrate import simulate
from ..metrics import (
    _diverged_where_any_member,
    band_coverage,
    mean_relative_error,
    rollout_error,
)

__all__ = [
    "DynamicsRun",
    "RunResult",
    "EnsembleRollouts",
    "compare_losses",
    "ensemble_rollouts",
    "equal_budget_rows",
    "member_errors",
]


@dataclass
class DynamicsRun:
    """One dynamics model to train on a shared encoder.

    Attributes
    ----------
    name : str
        Key of the result.
    label : str
        How tables print it (e.g. ``"L_x,p (p=0.2)"``).
    rows : ndarray of int
        Training configurations (rows of the encoder's training states).
    forces : ndarray or sparse matrix of shape (len(rows), N)
        Their (partial) forces.
    params : dict
        ``PartialForceDynamics`` parameters (``loss``, ``latent_model``, ...).
    fit_params : dict
        Extra ``fit`` arguments (``inclusion_proba``, ``groups``).
    force_computations : int or None
        Particle forces the run consumed; None counts the computed
        coordinates of ``forces`` (right when a particle has one coordinate).
    """

    name: str
    label: str
    rows: np.ndarray
    forces: object
    params: dict = field(default_factory=dict)
    fit_params: dict = field(default_factory=dict)
    force_computations: int = None

    def __post_init__(self):
        if self.force_computations is None:
            if sp.issparse(self.forces):
                self.force_computations = int(self.forces.nnz)
            else:
                self.force_computations = int(np.count_nonzero(~np.isnan(self.forces)))


@dataclass
class RunResult:
    """The outcome of a :class:`DynamicsRun`.

    ``error`` scores the ensemble's mean rollout and ``member_errors`` each
    member's own (shape ``(n_members,)``): the members are latent models
    trained from different initialisations on the same data and encoder,
    as the paper's latent-model seeds are, whose spread it reports. ``Z_true``,
    ``Z_pred`` (the mean) and ``Z_members`` (each member, ``(n_members,
    n_test, T, d)``) are kept on request.
    """

    name: str
    label: str
    error: float
    force_computations: int
    n_configurations: int
    fit_seconds: float
    pipeline: Pipeline
    member_errors: np.ndarray = None
    Z_true: np.ndarray = None
    Z_pred: np.ndarray = None
    Z_members: np.ndarray = None


@dataclass
class EnsembleRollouts:
    """How an ensemble's rollouts compare with the truth (see
    :func:`ensemble_rollouts`).

    Attributes
    ----------
    error : float
        Unsquared Eq. 43 error of the mean trajectory on the observables.
    member_errors : ndarray of shape (n_members,)
        The same error of each member's own rollout.
    coverage : float
        Fraction of the true observables (after the initial time) inside
        the mean +- ``n_std`` standard deviations across members.
    n_std : float
    spread : float
        Mean over trajectories and times (after the initial one) of
        ``||std*|| / ||z*_true||``, the band's relative half-width per
        standard deviation.
    """

    error: float
    member_errors: np.ndarray
    coverage: float
    n_std: float
    spread: float


def ensemble_rollouts(pipeline, t, trajectories, dt=None, n_std=2.0):
    """Roll out a fitted pipeline whose dynamics is an ensemble, member by
    member, and score the mean trajectory, each member and the band.

    Parameters
    ----------
    pipeline : Pipeline of (encoder, PartialForceDynamics)
        Fitted, with ``n_members >= 2`` for a meaningful band.
    t : array-like of shape (T,)
        Times of the trajectories' states.
    trajectories : array-like of shape (n_trajectories, T, N)
        Microscopic test trajectories.
    dt : float, optional
        Latent integration step (default: the spacing of ``t``).
    n_std : float, default=2.0
        Half-width of the band in standard deviations.

    Returns
    -------
    EnsembleRollouts
    """
    trajectories = np.asarray(trajectories)
    n, T, N = trajectories.shape
    d_star = pipeline[0].n_observables_
    encoder = pipeline[:-1]
    Z_true = np.asarray(encoder.transform(trajectories.reshape(-1, N)))
    Z_true = Z_true.reshape(n, T, -1)[..., :d_star]
    Z_mean, Z_std, members = simulate(
        pipeline,
        trajectories[:, 0],
        t,
        dt=dt,
        on_divergence="mask",
        return_std=True,
        return_members=True,
    )
    Z_mean = _diverged_where_any_member(Z_mean[..., :d_star], members)
    Z_std = Z_std[..., :d_star]
    later = slice(1, None)  # every member starts at the true initial state
    spread = np.linalg.norm(Z_std[:, later], axis=-1) / np.linalg.norm(
        Z_true[:, later], axis=-1
    )
    return EnsembleRollouts(
        error=mean_relative_error(Z_true, Z_mean, squared=False),
        member_errors=member_errors(Z_true, members, d_star),
        coverage=band_coverage(
            Z_true[:, later], Z_mean[:, later], Z_std[:, later], n_std
        ),
        n_std=float(n_std),
        spread=float(np.nanmean(spread)),
    )


def member_errors(Z_true, Z_members, n_observables, mask=None):
    """The unsquared Eq. 43 error of each ensemble member's own rollouts on
    the observables.

    Parameters
    ----------
    Z_true : ndarray of shape (n_trajectories, T, d)
    Z_members : ndarray of shape (n_members, n_trajectories, T, d)
    n_observables : int
        d*, the leading latent coordinates scored.
    mask : ndarray of bool, shape (n_trajectories, T), optional
        The snapshots scored (all by default).

    Returns
    -------
    ndarray of shape (n_members,)
    """
    Z_true, Z_members = np.asarray(Z_true), np.asarray(Z_members)
    if Z_true.ndim != 3 or Z_true.shape[-1] < n_observables:
        raise ValueError(
            "Z_true must have shape (n_trajectories, T, d) with d >= n_observables "
            f"= {n_observables}, got {Z_true.shape}"
        )
    if (
        Z_members.ndim != 4
        or Z_members.shape[1:3] != Z_true.shape[:2]
        or Z_members.shape[-1] < n_observables
    ):
        raise ValueError(
            f"Z_members must have shape (n_members, {Z_true.shape[0]}, "
            f"{Z_true.shape[1]}, d) with d >= n_observables = {n_observables}, "
            f"got {Z_members.shape}"
        )
    return np.array(
        [
            mean_relative_error(
                Z_true[..., :n_observables],
                member[..., :n_observables],
                squared=False,
                mask=mask,
            )
            for member in Z_members
        ]
    )


def equal_budget_rows(n_configurations, budget, rng, trajectory_length=None):
    """Rows of the L_z training set that cost ``budget`` full-force
    configurations: random configurations, or (with ``trajectory_length``)
    enough whole random trajectories, as the reference code does.

    Parameters
    ----------
    n_configurations : int
        Rows available.
    budget : int
        Full-force configurations the force budget pays for.
    rng : numpy Generator
    trajectory_length : int, optional
        States per trajectory when rows are trajectory-major.

    Returns
    -------
    ndarray of int, sorted
    """
    budget = int(min(max(budget, 1), n_configurations))
    if trajectory_length is None:
        return np.sort(rng.choice(n_configurations, budget, replace=False))
    n_traj = n_configurations // trajectory_length
    n_pick = int(min(max(1, round(budget / trajectory_length)), n_traj))
    picked = np.sort(rng.choice(n_traj, n_pick, replace=False))
    return (picked[:, None] * trajectory_length + np.arange(trajectory_length)).ravel()


def compare_losses(
    encoder,
    X,
    runs,
    t,
    test,
    *,
    dt=None,
    defaults=None,
    keep_trajectories=False,
    log=None,
    verbose=False,
):
    """Train one dynamics model per run on a shared fitted encoder, roll each
    out from the test trajectories' initial states and score it.

    Parameters
    ----------
    encoder : fitted ClosureAutoencoder (or another encoder)
    X : array-like of shape (n_samples, N)
        The encoder's training states; each run trains on some of its rows.
    runs : sequence of DynamicsRun
    t : array-like of shape (T,)
        Times of the test states.
    test : array-like of shape (n_test, T, N)
        Test trajectories.
    dt : float, optional
        Latent integration step (default: the spacing of ``t``).
    defaults : dict, optional
        ``PartialForceDynamics`` parameters shared by every run (a run's
        own ``params`` take precedence).
    keep_trajectories : bool, default=False
        Keep the true and predicted latent trajectories in the results.
    log : callable, optional
        ``log(message)`` for progress.
    verbose : bool, default=False
        A progress bar over each test rollout's output times.

    Returns
    -------
    dict of RunResult, keyed by run name
    """
    results = {}
    for run in runs:
        params = {**(defaults or {}), **run.params}
        start = time.perf_counter()
        dyn = PartialForceDynamics(**params)
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            dyn.fit(encoder.transform(X[run.rows]), run.forces, **run.fit_params)
        seconds = time.perf_counter() - start
        pipe = Pipeline([("ae", encoder), ("dyn", dyn)])
        error, Z_true, Z_pred, Z_members = rollout_error(
            pipe, t, test, dt=dt, return_members=True, verbose=verbose
        )
        results[run.name] = RunResult(
            name=run.name,
            label=run.label,
            error=error,
            force_computations=run.force_computations,
            n_configurations=len(run.rows),
            fit_seconds=seconds,
            pipeline=pipe,
            member_errors=member_errors(Z_true, Z_members, encoder.n_observables_),
            Z_true=Z_true if keep_trajectories else None,
            Z_pred=Z_pred if keep_trajectories else None,
            Z_members=Z_members if keep_trajectories else None,
        )
        if log is not None:
            log(
                f"  {run.label:<22} {len(run.rows):>7} configurations: error "
                f"{error:.3e}{_members_note(results[run.name].member_errors)} "
                f"(fit {seconds:.1f} s)"
            )
    return results


def _members_note(errors):
    """``", members a, b, c"`` for an ensemble, nothing for one model."""
    if len(errors) < 2:
        return ""
    return ", members " + ", ".join(f"{e:.3e}" for e in errors)


def format_mean_std(values):
    """``"m.mme-x +- s.se-y"`` of finite values (the mean alone for one
    value, which has no spread), the count of diverged ones appended; ``"-"``
    without values."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if not len(finite):
        text = "-"
    elif len(finite) == 1:
        text = f"{finite[0]:.2e}"
    else:
        text = f"{finite.mean():.2e} +- {finite.std():.1e}"
    diverged = len(values) - len(finite)
    return text + (f" ({diverged} div.)" if diverged else "")
