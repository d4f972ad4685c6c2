"""The one pass over the data that every loss and score of
:class:`~skmacro.PartialForceDynamics` needs.

With the encoder frozen, each configuration reduces to a few numbers: the
Horvitz-Thompson estimate of the latent velocity ``y ~ J f`` and the
quadratic form ``(b, A, c)`` of the loss in ``g = g_theta(z)``. The pass
reads ``X`` in chunks and never holds a Jacobian for more than the rows in
flight (:meth:`skmacro.encoders.Encoder.iter_jacobians`), and it uses only
the columns of ``J`` at the computed coordinates.

A control variate (beyond the paper) lowers the variance of both: the mean
force each coordinate had at neighbouring configurations where it was
computed (:class:`NeighbourForceMeans`), or a cheap force model's guess
at every coordinate (:class:`ForceModelControl`, e.g.
:class:`skmacro.force_models.PairForceModel`). Built from *other*
configurations' forces only, either leaves the estimates unbiased.
"""

import contextlib
import copy
import sys

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors
from tqdm.auto import tqdm

from ._arrays import is_dask, n_rows, take_rows
from ._chunking import EMBEDDING_FIT_BUDGET, FLOAT_BUDGET, index_chunks, row_chunks

__all__ = [
    "ForceModelControl",
    "NeighbourForceMeans",
    "horvitz_thompson",
    "observable_velocities",
    "partial_force_statistics",
]

#: Principal components of ``X`` in which neighbouring configurations are found.
EMBEDDING_COMPONENTS = 20


def horvitz_thompson(J, w, f):
    """Horvitz-Thompson estimate ``J W f = sum_{i in I} w_i J_i f_i``.

    Parameters
    ----------
    J : torch.Tensor of shape (batch, d, m)
        Jacobian columns at the m computed coordinates.
    w : torch.Tensor of shape (batch, m)
        Weights ``1 / pi_i`` (0 on padding).
    f : torch.Tensor of shape (batch, m)
        Forces (or force residuals) at those coordinates.

    Returns
    -------
    torch.Tensor of shape (batch, d)
        Unbiased for ``J f`` over the random choice of computed coordinates
        (paper Eq. 13).
    """
    return torch.einsum("bdm,bm->bd", J, w * f)


def _observed(forces, rows, jac, device):
    """Jacobian columns, forces and weights at the computed coordinates of a
    chunk, in float64 on ``device``."""
    index, f, w = (torch.from_numpy(a).to(device) for a in forces.observed_chunk(rows))
    return index, jac.columns(index), f, w


def partial_force_statistics(
    encoder, X, forces, loss="partial", control=None, rows=None, progress=False
):
    """Per-configuration statistics of the loss, in one pass over the rows.

    With ``J = phi'(x)`` (d x N), ``G = J J^T``, ``W = diag(w)`` the
    Horvitz-Thompson weights (``1/pi_i`` on computed coordinates, 0
    elsewhere) and ``f`` the forces (0 where not computed):

    * ``loss="partial"`` (L_x,p, Eq. 12) and ``"x"`` (L_x, Eq. 10, all
      weights 1): ``sum_I w_i ||f_i - P_i g||^2 = c - 2 g^T b + g^T A g`` with
      ``P = J^T G^-1``, ``b = G^-1 J W f``, ``A = G^-1 J W J^T G^-1``,
      ``c = sum w_i ||f_i||^2``;
    * ``loss="z"`` (L_z, Eq. 9): ``||y - g||^2`` with ``y = J W f`` (the
      exact ``dz/dt`` with all forces, its unbiased estimate otherwise):
      ``b = y``, ``A = I``, ``c = ||y||^2``.

    With a control variate ``h`` (forces guessed from other configurations),
    the partial loss is taken on the residuals,
    ``sum_I w_i ||(f_i - h_i) - P_i (g - J h)||^2``: its expectation over the
    mask is still L_x plus a constant (the cross term vanishes because
    ``P^T (I - P J) = 0``), with far less variance when ``h`` is close to
    ``f``; ``y`` becomes ``J h + J W (f - h)``.

    Only the columns of ``J`` at computed coordinates, ``J J^T`` and ``J h``
    are formed, so the pass costs what the encoder's structured Jacobian
    costs for those products, not O(d^2 N).

    Parameters
    ----------
    encoder : Encoder
        Fitted (see :mod:`skmacro.encoders`).
    X : array-like of shape (n_samples, N)
        Microscopic states.
    forces : PartialForces
        Validated partial forces for the same rows.
    loss : {"partial", "x", "z"}, default="partial"
    control : NeighbourForceMeans or None, default=None
        Control variate; None for the paper's plain estimator.
    rows : slice, ndarray of int or None, default=None
        The rows to reduce (None: all, in order).
    progress : bool, default=False
        Show a progress bar on stderr: over the configurations, or for a
        dask array under the local schedulers over its blocks (dask's own
        ``dask.diagnostics.ProgressBar``); on a ``dask.distributed`` client
        the client's dashboard shows the pass.

    Returns
    -------
    dict of torch.Tensor
        ``z`` (n_rows, d), ``b`` (n_rows, d), ``A`` (n_rows, d, d),
        ``c`` (n_rows,), and ``y`` (n_rows, d), the estimate of
        ``dz/dt = J f``; all float64, in the order of ``rows``, on the
        encoder's device.
    """
    if is_dask(X) and rows is None:
        return _dask_statistics(encoder, X, forces, loss, control, progress)
    total = n_rows(X) if rows is None else len(np.arange(n_rows(X))[rows])
    with tqdm(
        total=total, desc="statistics pass", unit="config", disable=not progress
    ) as bar:
        parts = (
            _chunk_statistics(
                z,
                jac,
                forces.observed_chunk(chunk),
                None if control is None else control.chunk(chunk),
                loss,
            )
            for chunk, z, jac in encoder.iter_jacobians(X, rows)
        )
        return _collect(_counted(parts, bar), total)


def _counted(parts, bar):
    """Pass the per-chunk statistics through, advancing ``bar`` by each
    chunk's rows."""
    for part in parts:
        bar.update(len(part["z"]))
        yield part


def _collect(parts, total):
    """The per-chunk statistics ``parts`` (an iterable of dicts of tensors
    whose first axis is the chunk's rows) written into tensors for all
    ``total`` rows, allocated at the first chunk.

    Keeping each chunk's small result alive until a final concatenation
    would leave them scattered between the chunks' large, freed
    temporaries, which glibc's heap then cannot hand back: the resident
    memory of a 51,200-atom pass grew by about 5 MB per configuration.
    """
    out, start = None, 0
    for part in parts:
        if out is None:
            out = {
                key: value.new_empty((total, *value.shape[1:]))
                for key, value in part.items()
            }
        size = len(part["z"])
        for key, value in part.items():
            out[key][start : start + size] = value
        start += size
    return out


def _chunk_statistics(z, jac, observed, h, loss):
    """The statistics of one chunk (see :func:`partial_force_statistics`),
    computed on the encoder's device: no round trip to the host per chunk.

    ``observed`` is ``forces.observed_chunk(rows)``; ``h`` the control
    variate (chunk, N) or None.
    """
    device = z.device
    jac = jac.to(dtype=torch.float64)
    index, f, w = (torch.from_numpy(a).to(device) for a in observed)
    J = jac.columns(index)  # (chunk, d, m): J at the computed coordinates
    if h is None:
        r, u = f, 0.0
    else:
        h = torch.from_numpy(h).to(device)
        r, u = f - torch.gather(h, 1, index), jac.matvec(h)
    JWr = horvitz_thompson(J, w, r)
    y = u + JWr
    if loss == "z":
        b, c = y, torch.sum(y**2, dim=-1)
        A = torch.eye(y.shape[1], dtype=y.dtype, device=device)
        A = A.expand(len(y), -1, -1)
    else:
        G_inv = torch.linalg.inv(jac.gram())
        A = G_inv @ ((J * w[:, None, :]) @ J.transpose(1, 2)) @ G_inv
        b = torch.einsum("bij,bj->bi", G_inv, JWr)
        c = torch.sum(w * r**2, dim=-1)
        if h is not None:
            # Expand (g - u)^T A (g - u) - 2 (g - u)^T b into the form in g.
            Au = torch.einsum("bij,bj->bi", A, u)
            c = c + 2 * torch.sum(u * b, dim=-1) + torch.sum(u * Au, dim=-1)
            b = b + Au
    return {"z": z.double(), "y": y, "b": b, "A": A, "c": c}


def _block_statistics(encoder, x, ids, forces, control, loss):
    """The statistics of one block of a dask array, on a worker: ``x`` are
    the block's states, ``ids`` their rows in the whole array, whose
    computed forces are read from ``forces`` one Jacobian chunk at a time,
    as the in-memory pass reads them."""

    def parts():
        for r, z, jac in encoder.iter_jacobians(x):
            rows = ids[r]
            h = None if control is None else control.guess(rows, x[r])
            observed = forces.observed_chunk(rows)
            chunk = _chunk_statistics(z, jac, observed, h, loss)
            yield {key: value.cpu() for key, value in chunk.items()}

    return _collect(parts(), len(x))


def _dask_statistics(encoder, X, forces, loss, control, progress=False):
    """The statistics pass mapped over the row blocks of a dask array: each
    block is reduced where it lives (on the workers of the active
    ``dask.distributed`` client, or dask's local scheduler) and only the
    O(d^2) statistics per configuration come back.

    Blocks hold about ``FLOAT_BUDGET`` floats of ``X`` (the array's own
    chunks are merged or split to that size). The encoder (on a distributed
    client without its optimizer), the forces and the control variate are
    shared by every block: one object each in the local schedulers' graph,
    scattered to every worker once on a client, instead of travelling
    inside each task, where a wide encoder (its first layer alone is N x
    width) would make the graph itself gigabytes. Each block reads its
    computed forces when it is reduced: read up front, the padded copies of
    every block (24 bytes per computed force) would all be held until the
    pass ends, 3.8 GB at the paper's Allen-Cahn size.
    """
    import dask
    from dask.diagnostics import ProgressBar

    rows_per_block = row_chunks(len(X), X.shape[1], FLOAT_BUDGET)[0].stop
    X = X.rechunk({0: rows_per_block, 1: -1})
    client = _distributed_client()
    if client is None:
        shared = [dask.delayed(a, pure=True) for a in (encoder, forces, control)]
    else:
        shared = client.scatter(
            [_without_optimizer(encoder), forces, control], broadcast=True
        )
    shared_encoder, shared_forces, shared_control = shared
    tasks, start = [], 0
    for block, size in zip(X.to_delayed().ravel(), X.chunks[0], strict=True):
        tasks.append(
            dask.delayed(_block_statistics)(
                shared_encoder,
                block,
                np.arange(start, start + size),
                shared_forces,
                shared_control,
                loss,
            )
        )
        start += size
    if progress:
        print(
            f"statistics pass: {len(X)} configurations in {len(tasks)} dask blocks",
            file=sys.stderr,
        )
    # dask's own bar serves the local schedulers; a client's dashboard shows
    # the pass there. On a client, dask.compute (not a gather of futures)
    # secedes from the worker's pool when the pass itself runs inside a task
    # (a search on the cluster fitting on a dask X), which would otherwise
    # hold every worker thread and deadlock.
    bar = progress and client is None
    with ProgressBar(out=sys.stderr) if bar else contextlib.nullcontext():
        parts = dask.compute(*tasks)
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def _without_optimizer(encoder):
    """A shallow copy of a fitted skorch-based encoder without its optimizer,
    which the pass never uses: Adam's two moments per parameter make up two
    thirds of a fitted autoencoder's pickle, and every worker receives it."""
    if getattr(encoder, "optimizer_", None) is None:
        return encoder
    slim = copy.copy(encoder)
    slim.optimizer_ = None
    return slim


def _distributed_client():
    """The active ``dask.distributed`` client, or None (no client, or
    distributed not installed)."""
    try:
        from distributed import get_client
    except ImportError:
        return None
    try:
        return get_client()
    except ValueError:
        return None


def observable_velocities(encoder, X, forces, rows=None):
    """Horvitz-Thompson estimate of the observables' velocity ``dz*/dt``.

    ``y* = sum_{i in I} w_i phi*'_i(x) f_i`` is unbiased for
    ``phi*'(x) f(x)``; since ``phi*`` has no trainable parameters it is the
    same target for every encoder, which makes the p-aware score fair across
    pipelines.

    Parameters
    ----------
    encoder : Encoder
        Fitted, with at least one observable.
    X : array-like of shape (n_samples, N)
    forces : PartialForces
    rows : slice, ndarray of int or None, default=None

    Returns
    -------
    y : ndarray of shape (n_rows, d*), float64
    Z : ndarray of shape (n_rows, d), float32
        The latent coordinates of the same rows.
    """
    d_star = encoder.n_observables_
    if d_star == 0:
        raise ValueError(
            "scoring needs an encoder with fixed observables (d* >= 1); this "
            "encoder has none"
        )
    y_parts, z_parts = [], []
    for chunk, z, jac in encoder.iter_jacobians(X, rows):
        jac = jac.to(dtype=torch.float64)
        _, J, f, w = _observed(forces, chunk, jac, z.device)
        y_parts.append(horvitz_thompson(J[:, :d_star], w, f).cpu().numpy())
        z_parts.append(z.cpu().numpy())
    return np.concatenate(y_parts), np.concatenate(z_parts)


class _ControlVariate:
    """What the statistics pass asks of a control variate: ``chunk(rows)``
    for rows of the states it was built on (``self.X``), and ``guess(ids,
    x)`` on dask workers, where the states travel without ``X``."""

    def __getstate__(self):
        return {**self.__dict__, "X": None}

    def chunk(self, rows):
        """Control variate for a block of rows of the states it was built on.

        Parameters
        ----------
        rows : slice or ndarray of int

        Returns
        -------
        h : ndarray of shape (chunk, N), float64, or None (no guess)
        """
        ids = np.arange(n_rows(self.X))[rows]
        return self.guess(ids, take_rows(self.X, ids))


class ForceModelControl(_ControlVariate):
    """Control variate ``h[k] = model.predict(x_k)``: a force model's guess
    at every coordinate, cross-fitted so that no configuration's guess has
    seen its own computed forces.

    A model with ``fit(X, F)`` is cloned ``n_folds`` times; clone ``j`` is
    fitted on reference rows outside fold ``j`` (``F`` a CSR array of their
    computed forces; at most the rows a PCA embedding would read, about
    2**26 floats of ``X`` and between 256 and 4,096 rows, drawn at random)
    and guesses for the rows of fold ``j``; rows that are not reference
    rows (validation) get clone 0's guess. A model
    without ``fit`` (a fixed physical model) is used as it is.

    Parameters
    ----------
    model : object with ``predict(X) -> (n_samples, N)``
        Not modified.
    X : array-like of shape (n_samples, N)
        Microscopic states.
    forces : PartialForces
        The forces of the same rows.
    rows : ndarray of int or None, default=None
        Reference rows (None: all).
    n_folds : int, default=2
    random_state : int or None, default=None
        Seeds the folds.
    """

    def __init__(self, model, X, forces, rows=None, n_folds=2, random_state=None):
        self.X = X
        n = n_rows(X)
        rows = np.arange(n) if rows is None else np.sort(np.asarray(rows))
        self.fold_of = np.zeros(n, dtype=np.intp)
        if not hasattr(model, "fit"):
            self.models = [model]
            return
        if len(rows) < n_folds:
            raise ValueError(
                f"control_variate={model!r} is cross-fitted on {n_folds} folds of "
                f"the training configurations and needs at least {n_folds} of "
                f"them, got {len(rows)}"
            )
        rng = np.random.default_rng(random_state)
        folds = rng.permutation(len(rows)) % n_folds
        self.fold_of[rows] = folds
        n_fit = min(4096, max(256, EMBEDDING_FIT_BUDGET // X.shape[1]))
        self.models = []
        for fold in range(n_folds):
            fit_rows = rows[folds != fold]
            if len(fit_rows) > n_fit:
                fit_rows = np.sort(rng.choice(fit_rows, n_fit, replace=False))
            self.models.append(
                clone(model, safe=False).fit(
                    take_rows(X, fit_rows), forces.computed_csr(fit_rows)
                )
            )

    def guess(self, ids, x):
        """Control variate for given states.

        Parameters
        ----------
        ids : ndarray of int, shape (n,)
            Their rows in the states the control variate was built on.
        x : ndarray of shape (n, N)

        Returns
        -------
        h : ndarray of shape (n, N), float64
        """
        h = np.empty(x.shape, dtype=np.float64)
        for fold, model in enumerate(self.models):
            chosen = self.fold_of[ids] == fold
            if chosen.any():
                h[chosen] = model.predict(x[chosen])
        if not np.all(np.isfinite(h)):
            raise ValueError(
                f"the control variate {self.models[0]!r} guessed NaN or inf forces "
                f"for {int((~np.isfinite(h)).any(axis=1).sum())} of {len(h)} "
                "configurations"
            )
        return h


class NeighbourForceMeans(_ControlVariate):
    """Control variate ``h[k, i]``: the mean of the forces computed on
    coordinate ``i`` at the ``n_neighbors`` reference configurations nearest
    to configuration ``k`` (``k`` itself excluded); 0 where none of them
    computed ``i``.

    Only the reference rows' states and forces are read to build it (pass
    the training rows, so that validation rows stay unseen); any row can
    then be queried. Neighbours are found in a PCA of the states fitted on a
    sample of the reference rows.

    Parameters
    ----------
    X : array-like of shape (n_samples, N)
        Microscopic states.
    forces : PartialForces
        The forces of the same rows.
    n_neighbors : int
    rows : ndarray of int or None, default=None
        Reference rows (None: all).
    random_state : int or None, default=None
        Seed of the embedding's row sample and randomised SVD.
    """

    def __init__(self, X, forces, n_neighbors, rows=None, random_state=None):
        self.X = X
        rows = np.arange(n_rows(X)) if rows is None else np.sort(np.asarray(rows))
        self.rows = rows
        self.k = min(n_neighbors, len(rows) - 1)
        if self.k < 1:
            return
        n_features = X.shape[1]
        n_components = min(EMBEDDING_COMPONENTS, n_features, max(len(rows) - 1, 1))
        rng = np.random.default_rng(random_state)
        n_fit = min(4096, max(256, EMBEDDING_FIT_BUDGET // n_features))
        sample = rows
        if len(rows) > n_fit:
            sample = rows[np.sort(rng.choice(len(rows), n_fit, replace=False))]
        self.pca = PCA(n_components, svd_solver="randomized", random_state=random_state)
        self.pca.fit(take_rows(X, sample))
        self.index = NearestNeighbors(n_neighbors=self.k + 1).fit(self._embed(rows))
        # The reference rows' computed forces in float32, and ones on the same
        # entries (sharing their index arrays) to count them: 12 bytes per
        # computed force. The guess is any function of other rows' forces, so
        # its precision does not bias the estimates.
        values = self.values = forces.computed_csr(rows, dtype=np.float32)
        self.observed = sp.csr_array(
            (np.ones(values.nnz, dtype=np.float32), values.indices, values.indptr),
            shape=values.shape,
        )

    def _embed(self, rows):
        """PCA coordinates of the given rows, read in chunks."""
        return np.concatenate(
            [
                self.pca.transform(take_rows(self.X, chunk))
                for chunk in index_chunks(rows, self.X.shape[1])
            ]
        )

    def guess(self, ids, x):
        """Control variate for given states.

        Parameters
        ----------
        ids : ndarray of int, shape (n,)
            Their rows in the states the control variate was built on (a row
            that is a reference row never sees its own forces).
        x : ndarray of shape (n, N)
            The states.

        Returns
        -------
        h : ndarray of shape (n, N), float64, or None without neighbours
        """
        if self.k < 1:
            return None
        found = self.index.kneighbors(self.pca.transform(x), return_distance=False)
        # Drop the row itself (or, for a row that is not a reference or among
        # exact duplicates, the last neighbour) so that h_k never sees the
        # mask of configuration k.
        is_self = self.rows[found] == ids[:, None]
        is_self[~is_self.any(axis=1), -1] = True
        neighbours = found[~is_self].reshape(len(ids), self.k)
        size, k = neighbours.shape
        indptr = np.arange(0, size * k + 1, k)
        pick = sp.csr_array(
            (np.ones(size * k, dtype=np.float32), neighbours.ravel(), indptr),
            shape=(size, self.values.shape[0]),
        )
        total = (pick @ self.values).toarray().astype(np.float64)
        count = (pick @ self.observed).toarray()
        return np.divide(total, count, out=np.zeros_like(total), where=count > 0)
