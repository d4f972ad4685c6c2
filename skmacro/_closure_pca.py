"""``closure_pca``: keep an MLP closure's first-layer weight only along the
leading principal directions of the training states."""

import warnings
from numbers import Integral

import numpy as np
import torch

from ._chunking import evenly_spaced, row_chunks

#: Training states (evenly spaced) on which the principal directions are
#: fitted: their Gram matrix stays cheap at N = 300,000.
PCA_SAMPLE = 1024
#: Training states on which the projection's shift of the closure is measured.
SHIFT_SAMPLE = 256
#: Median shift above which the projection warns: the closure then differs
#: on the data from the one the decoder was trained with.
SHIFT_WARN = 1e-2


def leading_directions(sample, n_components, n_min):
    """Leading principal directions of the rows of ``sample`` (centred in
    place).

    ``n_components`` is a count, or a fraction of the variance (the fewest
    directions that exceed it, as ``sklearn.decomposition.PCA``); at least
    ``n_min`` are kept. With fewer rows m than features N the directions
    come from the m x m Gram matrix of the centred rows (float64, in column
    blocks), far cheaper than a full SVD at N = 300,000.

    Parameters
    ----------
    sample : ndarray of shape (m, N)
    n_components : int or float in (0, 1)
    n_min : int

    Returns
    -------
    V : ndarray of shape (n_kept, N), float32, orthonormal rows
    explained : float
        Fraction of the sample's variance along them.
    """
    sample -= sample.mean(axis=0)
    m, n = sample.shape
    # Column blocks whose float64 copy stays within the chunk budget.
    blocks = row_chunks(n, m)
    if n <= m:  # the N x N covariance
        variance, vectors = np.linalg.eigh(sample.T.astype(np.float64) @ sample)
    else:
        variance, vectors = np.linalg.eigh(
            sum(sample[:, b].astype(np.float64) @ sample[:, b].T for b in blocks)
        )
    variance, vectors = variance[::-1].clip(min=0), vectors[:, ::-1]
    explained = np.cumsum(variance) / max(variance.sum(), np.finfo(float).tiny)
    if isinstance(n_components, Integral):
        n_kept = n_components
    else:
        n_kept = np.searchsorted(explained, n_components, side="right") + 1
    n_kept = int(min(max(n_kept, n_min), len(variance), n))
    if n <= m:
        V = vectors[:, :n_kept].T
    else:
        # Rows of the sample combined by the Gram eigenvectors, then made
        # orthonormal (directions of tiny variance come out inexact).
        U = vectors[:, :n_kept]
        V = np.concatenate([U.T @ sample[:, b] for b in blocks], axis=1)
        V = np.linalg.qr(V.T)[0].T
    return V.astype(np.float32), float(explained[n_kept - 1])


def project_closure(closure, X, rows, closure_pca, encode):
    """Project an MLP closure's first-layer weight on the leading principal
    directions of the scaled training states.

    Parameters
    ----------
    closure : MLPClosure
        Fitted; its first layer is changed in place.
    X : array-like of shape (n_samples, N)
    rows : ndarray of int
        Training rows.
    closure_pca : int or float in (0, 1)
        Directions kept, or the fraction of the variance they must explain
        (at least the closure's ``n_outputs`` are kept).
    encode : callable
        ``encode(rows) -> torch.Tensor (len(rows), d)``, the encoder's latent
        coordinates at those rows of ``X``; the closure's are its last
        ``n_outputs`` columns.

    Returns
    -------
    explained : float
        Fraction of the variance along the kept directions.
    shift : float
        The median over closure coordinates of the standard deviation of
        their change on up to 256 training states, relative to their own.
    """
    layer = closure.first_layer
    if isinstance(closure_pca, Integral) and closure_pca >= closure.n_features:
        return 1.0, 0.0  # every direction: nothing to project
    sample = np.asarray(X[evenly_spaced(rows, PCA_SAMPLE)], dtype=np.float32)
    device = layer.weight.device
    sample = closure.standardize(torch.as_tensor(sample, device=device)).cpu().numpy()
    V, explained = leading_directions(sample, closure_pca, closure.n_outputs)
    V = torch.as_tensor(V, device=device)
    check = evenly_spaced(rows, SHIFT_SAMPLE)
    before = encode(check)[:, -closure.n_outputs :]
    with torch.no_grad():
        layer.weight.copy_((layer.weight @ V.T) @ V)
    shift = (encode(check)[:, -closure.n_outputs :] - before).std(dim=0)
    spread = before.std(dim=0)
    shift = float(np.median((shift / spread.clamp_min(1e-30)).cpu().numpy()))
    if shift > SHIFT_WARN:
        warnings.warn(
            f"closure_pca={closure_pca!r} moved the closure coordinates on the "
            f"training states by a median {shift:.2g} of their spread: the states "
            f"vary along more than the {len(V)} directions kept ({explained:.6g} "
            "of the variance). Keep more directions (or closure_pca=None).",
            UserWarning,
            stacklevel=4,
        )
    return explained, shift
