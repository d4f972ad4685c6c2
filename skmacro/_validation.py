"""Input checks shared by the estimators and functions."""

import numpy as np
from sklearn.utils import check_array


def check_states(X, name="X", n_features=None, dtype=np.float32):
    """Validate a 2-D array of finite values, returned as a new or unchanged
    array of ``dtype`` (the caller's array is never modified).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    name : str
        Argument name used in error messages.
    n_features : int, optional
        Required number of columns.
    dtype : numpy dtype, default=float32

    Returns
    -------
    ndarray of shape (n_samples, n_features)
    """
    X = check_array(X, dtype=dtype, input_name=name, ensure_min_samples=1)
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(
            f"{name} has {X.shape[1]} features (columns), expected {n_features}"
        )
    return X
