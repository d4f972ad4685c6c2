"""Standardisation: the one place where means and scales of data are
computed."""

import numpy as np
import torch


def column_moments(batches):
    """Column means and (biased) variances of a data set streamed in chunks.

    Two passes, accumulated in float64, so no temporary as large as the data
    set is made and the variance does not suffer from cancellation.

    Parameters
    ----------
    batches : callable
        ``batches()`` returns a fresh iterable of arrays or tensors of shape
        (chunk, n_columns).

    Returns
    -------
    mean, var : ndarray of shape (n_columns,), float64
    """
    total, count = 0.0, 0
    for block in batches():
        block = np.asarray(block)
        total = total + block.sum(axis=0, dtype=np.float64)
        count += len(block)
    if count == 0:
        raise ValueError("cannot standardise an empty data set")
    mean = total / count
    var = sum(((np.asarray(block) - mean) ** 2).sum(axis=0) for block in batches())
    return mean, var / count


def nonzero_scale(scale, mean=None):
    """Scales with the degenerate entries (constant columns) set to 1, so
    that dividing by them is safe and leaves those columns unscaled.

    A scale counts as degenerate below ``1e-12`` relative to the largest
    absolute mean (or 1), or when it is NaN (one row has no spread).

    Parameters
    ----------
    scale : ndarray or torch.Tensor of shape (n_columns,)
    mean : ndarray or torch.Tensor of shape (n_columns,), optional

    Returns
    -------
    same type as ``scale``
    """
    reference = 1.0
    if mean is not None and len(mean):
        reference = max(reference, float(abs(mean).max()))
    # NaN (the spread of a single row) is degenerate too.
    degenerate = ~(scale >= 1e-12 * reference)
    if isinstance(scale, torch.Tensor):
        return torch.where(degenerate, torch.ones_like(scale), scale)
    return np.where(degenerate, 1.0, scale)


def latent_moments(z):
    """Mean and safe standard deviation of latent coordinates.

    Parameters
    ----------
    z : torch.Tensor of shape (n_samples, d)

    Returns
    -------
    mean, scale : torch.Tensor of shape (d,)
    """
    mean = z.mean(dim=0)
    return mean, nonzero_scale(z.std(dim=0), mean)


def time_scale(z_scale, y):
    """A time unit for latent dynamics: the geometric mean over coordinates
    of (spread of z) / (spread of dz/dt), so that standardised coordinates
    change by O(1) per unit.

    Parameters
    ----------
    z_scale : torch.Tensor of shape (d,)
    y : torch.Tensor of shape (n_samples, d)
        Estimates of dz/dt.

    Returns
    -------
    torch.Tensor of shape ()
    """
    y_scale = nonzero_scale(y.std(dim=0), y.mean(dim=0))
    return torch.exp(torch.mean(torch.log(z_scale / y_scale)))
