"""The paper's experimental protocols, shared by the main job, the examples and
the benchmarks (Chen & Li, Section 5.1 and Appendix B.1)."""

import numpy as np

from .integrate import simulate
from .metrics import mean_relative_error
from .systems import PredatorPrey

#: Published Predator-Prey test errors (unsquared Eq. 43), Table 2 of the
#: paper: equivalent full-force training size -> {loss: (mean, std)}.
_TABLE2_COLUMNS = ("x", "3/4", "1/2", "1/4", "1/5")
_TABLE2_ROWS = {
    600: [(1.09e-2, 0.57e-2), (1.79e-2, 1.11e-2), (9.22e-3, 4.46e-3),
          (3.50e-3, 1.33e-3), (4.00e-3, 1.78e-3)],
    1500: [(4.70e-3, 0.46e-3), (4.56e-3, 1.97e-3), (3.30e-3, 1.60e-3),
           (2.19e-3, 0.57e-3), (1.92e-3, 0.47e-3)],
    3000: [(2.90e-3, 1.63e-3), (2.07e-3, 0.41e-3), (1.57e-3, 0.45e-3),
           (1.23e-3, 0.16e-3), (1.34e-3, 0.20e-3)],
    6000: [(1.24e-3, 0.16e-3), (1.07e-3, 0.18e-3), (1.46e-3, 0.59e-3),
           (9.08e-4, 0.25e-4), (1.13e-3, 0.31e-3)],
    12000: [(9.20e-4, 2.30e-4), (8.13e-4, 0.64e-4), (8.23e-4, 0.13e-4),
            (7.66e-4, 3.14e-4), (8.36e-4, 1.94e-4)],
    24000: [(6.76e-4, 0.93e-4), (6.85e-4, 0.95e-4), (6.98e-4, 1.20e-4),
            (5.64e-4, 0.18e-4), (5.70e-4, 1.00e-4)],
}  # fmt: skip
PREDATOR_PREY_TABLE2 = {
    size: dict(zip(_TABLE2_COLUMNS, row, strict=True))
    for size, row in _TABLE2_ROWS.items()
}

#: Table 1 of the paper, Predator-Prey row (p = 1/5, same data size): L_z and L_x,p.
PREDATOR_PREY_TABLE1 = {"z": (3.19e-3, 0.60e-3), "partial": (1.34e-3, 0.16e-3)}


def predator_prey_training_states(n_trajectories, random_state=None, system=None):
    """Training states of the paper's protocol (Appendix B.1).

    Explicit Euler with dt = 0.01 from t = 0, every 10th state kept, 300
    states per trajectory (t = 0, 0.1, ..., 29.9, as in the reference code).

    Parameters
    ----------
    n_trajectories : int
    random_state : int, RandomState or None
        Seed of the initial conditions.
    system : PredatorPrey, optional
        Defaults to ``PredatorPrey()``.

    Returns
    -------
    X : ndarray of shape (n_trajectories * 300, 100)
        Trajectory-major: rows ``300 * i ... 300 * i + 299`` are trajectory i.
    """
    system = system or PredatorPrey()
    X0 = system.sample_initial(n_trajectories, random_state=random_state)
    traj = system.simulate(X0, t_end=30.0, dt=0.01, method="euler", stride=10)
    return traj[:, :300].reshape(-1, system.n_features)


def predator_prey_test_trajectories(n_trajectories=100, random_state=1, system=None):
    """Test trajectories of the paper's protocol: RK4, dt = 0.01, 3000 steps.

    Returns
    -------
    t : ndarray of shape (3000,)
        Times 0, 0.01, ..., 29.99.
    trajectories : ndarray of shape (n_trajectories, 3000, 100)
    """
    system = system or PredatorPrey()
    X0 = system.sample_initial(n_trajectories, random_state=random_state)
    traj = system.simulate(X0, t_end=30.0, dt=0.01, method="rk4")[:, :3000]
    return np.arange(3000) * 0.01, traj


def rollout_error(pipeline, t, trajectories, dt=0.01, squared=False):
    """Eq. 43 error of a fitted pipeline's latent rollouts on the observables.

    The true latent trajectories are the encoded microscopic ones; the
    predicted ones start from the encoded initial states and use latent RK4
    with step ``dt``. The default (unsquared, dt = 0.01) is how the paper's
    tables were computed.

    Parameters
    ----------
    pipeline : Pipeline of (ClosureAutoencoder, PartialForceDynamics)
    t : ndarray of shape (T,)
    trajectories : ndarray of shape (n_trajectories, T, N)
    dt : float, default=0.01
    squared : bool, default=False

    Returns
    -------
    error : float
    Z_true, Z_pred : ndarray of shape (n_trajectories, T, d)
    """
    n, T, N = trajectories.shape
    encoder = pipeline[:-1]
    Z_true = np.asarray(encoder.transform(trajectories.reshape(-1, N))).reshape(
        n, T, -1
    )
    Z_pred = simulate(pipeline, trajectories[:, 0], t, dt=dt, on_divergence="mask")
    d_star = pipeline[0].n_observables_
    error = mean_relative_error(
        Z_true[..., :d_star], Z_pred[..., :d_star], squared=squared
    )
    return error, Z_true, Z_pred
