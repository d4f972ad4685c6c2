"""Trajectory errors (paper Eq. 43)."""

import numpy as np

__all__ = ["mean_relative_error"]


def mean_relative_error(z_true, z_pred, squared=True):
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
    denominator = ref.sum(axis=1)
    if np.any(denominator == 0):
        raise ValueError(
            "a true trajectory is identically zero: relative error undefined"
        )
    # A diverged (NaN) prediction counts as an infinite error, not a skipped one.
    ratio = np.where(np.isnan(err.sum(axis=1)), np.inf, err.sum(axis=1) / denominator)
    return float(ratio.mean())
