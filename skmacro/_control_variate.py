"""Control variates for partial forces: the mean force each coordinate had at
neighbouring configurations where it was computed.

With ``h_k`` built only from *other* configurations, the Horvitz-Thompson
estimate of configuration k can be centred on it without bias:
``J h + J W (f - h)`` has the expectation ``J f`` over the mask of k, whatever
``h`` is, and a variance driven by ``f - h`` instead of ``f``. Configurations
of one trajectory, or of trajectories that start close, carry nearly the same
microscopic forces, so ``f - h`` is small.
"""

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from ._chunking import row_chunks

#: Floats of the sample the embedding is fitted on (at least 256 rows, at
#: most 4096).
_EMBED_FIT_FLOATS = 2**26


def _embed(X, n_components, random_state):
    """Low-dimensional PCA embedding of the states, fitted on a row sample and
    applied chunk by chunk (memory O(sample * N), not a copy of X)."""
    n_components = min(n_components, X.shape[1], max(len(X) - 1, 1))
    rng = np.random.default_rng(random_state)
    n_fit = min(4096, max(256, _EMBED_FIT_FLOATS // X.shape[1]))
    sample = X
    if len(X) > n_fit:
        sample = X[np.sort(rng.choice(len(X), n_fit, replace=False))]
    pca = PCA(n_components, svd_solver="randomized", random_state=random_state)
    pca.fit(sample)
    return np.concatenate([pca.transform(X[r]) for r in row_chunks(*X.shape)])


class NeighbourForceMeans:
    """``h[k, i]``: mean of the forces computed on coordinate ``i`` at the
    ``n_neighbors`` configurations nearest to ``k`` (``k`` itself excluded);
    0 where none of them computed ``i``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, N)
        Microscopic states; neighbours are found in a 20-component PCA of them.
    forces : PartialForces
    n_neighbors : int
    random_state : int or None
        Seed of the embedding's randomised SVD.
    """

    def __init__(self, X, forces, n_neighbors, random_state=None):
        n = len(X)
        k = min(n_neighbors, n - 1)
        if k < 1:
            self.neighbours = None
            return
        embedding = _embed(X, 20, random_state)
        index = NearestNeighbors(n_neighbors=k + 1).fit(embedding)
        found = index.kneighbors(embedding, return_distance=False)
        # Drop k itself (or, among exact duplicates, the last neighbour) so
        # that h_k never sees the mask of configuration k.
        is_self = found == np.arange(n)[:, None]
        is_self[~is_self.any(axis=1), -1] = True
        self.neighbours = found[~is_self].reshape(n, k)
        values, observed = [], []
        for rows in row_chunks(*X.shape):
            f, w = forces.chunk(rows)
            mask = w > 0
            values.append(sp.csr_array(np.where(mask, f, 0.0)))
            observed.append(sp.csr_array(mask.astype(np.float64)))
        self._values = sp.vstack(values, format="csr")
        self._observed = sp.vstack(observed, format="csr")

    def chunk(self, rows):
        """Control variate for a block of rows.

        Parameters
        ----------
        rows : slice

        Returns
        -------
        h : ndarray of shape (chunk, N), float64, or None without neighbours
        """
        if self.neighbours is None:
            return None
        neighbours = self.neighbours[rows]
        size, k = neighbours.shape
        pick = sp.csr_array(
            (np.ones(size * k), neighbours.ravel(), np.arange(0, size * k + 1, k)),
            shape=(size, self._values.shape[0]),
        )
        total = (pick @ self._values).toarray()
        count = (pick @ self._observed).toarray()
        return np.divide(total, count, out=np.zeros_like(total), where=count > 0)
