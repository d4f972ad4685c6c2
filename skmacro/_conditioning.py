"""Diagnosis of a fitted encoder's conditioning: the median ``kappa(J J^T)``
and the advice given when it is large."""

import warnings

import torch

from .nn.autoencoder import condition_number
from .nn.closures import MLPClosure

#: Median kappa(J J^T) above which fitting warns. L_x and L_x,p weight latent
#: errors by (J J^T)^-1, so a large value means those losses neglect some
#: latent directions.
CONDITION_WARN = 1e3
#: Beyond this kappa J J^T is singular to float64 precision: some rows of J
#: are linearly dependent.
RANK_DEFICIENT = 1e12


class ConditioningWarning(UserWarning):
    """The fitted encoder's Jacobian is ill-conditioned (see
    ``ClosureAutoencoder.condition_number_``)."""


def median_condition_number(encoder, X, rows):
    """Median ``kappa(J J^T)`` of an encoder over some rows, in float64
    (float32 eigenvalues cannot resolve a kappa beyond ~1e7).

    Parameters
    ----------
    encoder : Encoder
    X : array-like of shape (n_samples, N)
    rows : ndarray of int

    Returns
    -------
    float
    """
    with torch.no_grad():
        kappa = torch.cat(
            [
                condition_number(J.to(torch.float64).gram()).cpu()
                for _, _, J in encoder.iter_jacobians(X, rows)
            ]
        )
    return float(kappa.median())


def _advice(kappa, *, lambda_cond, closure, n_features, closure_pca):
    """What to change when ``kappa`` is large."""
    if kappa <= RANK_DEFICIENT:
        advice = (
            f"Increase lambda_cond (now {lambda_cond:g}; try 10-100x), or express "
            "the observables in units whose gradients are comparable with the "
            "closure variables'."
        )
    elif not closure.n_outputs:
        advice = (
            "J is rank-deficient: the observables' gradients are linearly "
            "dependent; drop the redundant observables."
        )
    elif isinstance(closure, MLPClosure):
        fan_in = closure.base_fan_in
        rate = (
            "at lr" if fan_in is None else f"at lr * min(1, base_fan_in / {n_features})"
        )
        smaller = min(n_features, fan_in or n_features) // 4
        advice = (
            "J is rank-deficient: the closure's outputs became dependent. "
            "Adam moves each of the closure's first-layer pre-activations by "
            f"up to ~lr * n_features per step; that layer learns {rate}, "
            f"base_fan_in={fan_in}: a smaller base_fan_in (e.g. {smaller}) keeps "
            "it from saturating."
        )
    else:
        advice = (
            "J is rank-deficient: the closure's outputs became dependent; "
            "increase lambda_cond or lower lr."
        )
    if closure_pca is not None and closure.n_outputs:
        advice += (
            f" closure_pca={closure_pca!r} removed the closure's weight off the "
            "data, which raises kappa: compare with closure_pca=None."
        )
    return advice


def warn_if_ill_conditioned(
    kappa, *, n_rows, lambda_cond, closure, n_features, closure_pca=None
):
    """Issue a :class:`ConditioningWarning` with advice when the median
    ``kappa`` exceeds :data:`CONDITION_WARN`.

    Parameters
    ----------
    kappa : float
        Median condition number measured on ``n_rows`` training states.
    n_rows : int
    lambda_cond : float
    closure : closure network
    n_features : int
    closure_pca : int, float or None
    """
    if kappa <= CONDITION_WARN:
        return
    advice = _advice(
        kappa,
        lambda_cond=lambda_cond,
        closure=closure,
        n_features=n_features,
        closure_pca=closure_pca,
    )
    warnings.warn(
        "the fitted encoder's Jacobian J is ill-conditioned: median "
        f"kappa(J J^T) = {kappa:.3g} over {n_rows} training states (warning above "
        f"{CONDITION_WARN:g}). The L_x and L_x,p losses weight latent errors by "
        "(J J^T)^-1, so dynamics trained on this encoder can neglect some latent "
        f"directions. {advice}",
        ConditioningWarning,
        stacklevel=4,
    )
