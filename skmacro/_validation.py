"""Input checks shared by the estimators, systems and functions."""

import numbers
from difflib import get_close_matches

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


def check_choice(name, value, choices):
    """Return ``value`` if it is one of ``choices``, else raise a ``ValueError``
    that lists them and suggests the closest.

    Parameters
    ----------
    name : str
        Argument name used in the message.
    value : object
    choices : iterable of str

    Returns
    -------
    object
        ``value``, unchanged.

    Examples
    --------
    >>> check_choice("method", "rk5", ("rk4", "euler"))
    Traceback (most recent call last):
    ...
    ValueError: method='rk5' is not one of ['euler', 'rk4']; did you mean 'rk4'?
    """
    choices = sorted(choices)
    try:
        known = value in choices
    except TypeError:  # unhashable or incomparable values
        known = False
    if not known:
        hint = get_close_matches(str(value), choices, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(f"{name}={value!r} is not one of {choices}{suggestion}")
    return value


def check_p(p, name="p"):
    """Validate an inclusion probability in (0, 1].

    Parameters
    ----------
    p : float
    name : str, default="p"

    Returns
    -------
    float
    """
    if (
        isinstance(p, bool)
        or not isinstance(p, numbers.Real)
        or not np.isfinite(p)
        or not 0 < p <= 1
    ):
        raise ValueError(f"{name} must be a real number in (0, 1], got {p!r}")
    return float(p)
