"""Data written as they are produced, into stores a killed run resumes.

:class:`TrajectoryStore` holds the trajectories of one ``System.simulate``
call and :class:`PartialForceStore` the partial forces of one
``sample_partial_forces`` call. Given a path (or a zarr group) they write a
zarr store (trajectories in float32, forces in float64 with their integer
columns) whose chunks belong to one trajectory (or one block of
configurations) each, so that parallel workers (joblib processes or dask
workers sharing the file system) write their own chunks without locks. A
completion flag is set after a piece's data are written: a run killed
halfway leaves finished pieces flagged and unfinished ones unflagged, and the
same call resumes with the unfinished ones only. A store remembers a
fingerprint of the call (its settings, and the initial states or a few of
the states whose forces it holds); another call on the same path raises
instead of mixing data.

zarr (``pip install "skmacro[distributed]"``) is needed for path stores.
"""

import hashlib
import json
import os

import numpy as np
import scipy.sparse as sp

__all__ = ["TrajectoryStore", "PartialForceStore", "open_zarr_group"]

#: Floats per chunk of a store (4 MiB of float32), the size the training
#: stream reads in one block.
CHUNK_FLOATS = 2**20


def open_zarr_group(out):
    """A zarr group for ``out`` (a path or a group), created if absent."""
    try:
        import zarr
    except ImportError as exc:  # pragma: no cover - exercised without zarr
        raise ImportError(
            "writing to a store needs zarr: pip install 'skmacro[distributed]'"
        ) from exc
    if isinstance(out, zarr.Group):
        return out
    return zarr.open_group(str(out), mode="a")


def _fingerprint(settings, *arrays):
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode())
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


#: What each kind of store holds, for the message when one is opened as the
#: other.
_STORE_KINDS = {"trajectories": "trajectories", "values": "partial forces"}


def _claim(group, out, key, own, other):
    """Make the zarr ``group`` the store of the call whose fingerprint is
    ``key``, or raise when it belongs to another call or is the other kind
    of store (whose main array is ``other``).

    The fingerprint is written before any array, so that a run killed while
    creating them leaves a store the same call completes.
    """
    if other in group:
        raise ValueError(
            f"the store {out} holds {_STORE_KINDS[other]}, not "
            f"{_STORE_KINDS[own]}: give each its own path"
        )
    stored = group.attrs.get("fingerprint")
    if stored is None and own not in group:
        group.attrs["fingerprint"] = stored = key
    if stored != key:
        raise ValueError(
            f"the store {out} holds the {_STORE_KINDS[own]} of another call "
            "(other states or settings); use a new path, or delete the store "
            "to start over"
        )


def _is_store(out):
    return isinstance(out, (str, os.PathLike)) or type(out).__name__ == "Group"


class TrajectoryStore:
    """Where one ``simulate`` call writes its trajectories.

    Use :meth:`open`; ``out=None`` keeps them in memory, an array-like of
    the result's shape (``np.memmap``, zarr array, h5py dataset) is filled in
    place, and a path or zarr group gets a resumable zarr store with arrays
    ``trajectories`` (n, T, N) and ``done`` (n,).

    Attributes
    ----------
    array : array-like of shape (n_trajectories, T, N)
    path : str or None
        The store's path when workers can reopen it (a path was given).
    """

    def __init__(self, array, done=None, path=None):
        self.array, self.done, self.path = array, done, path

    @classmethod
    def open(cls, out, shape, fingerprint, X0, dtype=np.float32):
        """Open (or resume) the output of one call.

        Parameters
        ----------
        out : None, str, path, zarr group or array-like
        shape : tuple of int
            (n_trajectories, n_states, n_features).
        fingerprint : dict
            The call's settings; with ``X0`` they identify it.
        X0 : ndarray of shape (n_trajectories, n_features)
        dtype : numpy dtype, default=float32
            Of an in-memory result.

        Returns
        -------
        TrajectoryStore
        """
        shape = tuple(int(s) for s in shape)
        if out is None:
            return cls(np.empty(shape, dtype=dtype))
        if not _is_store(out):
            if tuple(getattr(out, "shape", ())) != shape:
                raise ValueError(
                    f"out must have shape {shape} (n_trajectories, n_states, "
                    f"n_features), got {getattr(out, 'shape', type(out).__name__)}"
                )
            return cls(out)
        group = open_zarr_group(out)
        _claim(group, out, _fingerprint(fingerprint, X0), "trajectories", "values")
        if "trajectories" not in group:
            rows = max(1, min(shape[1], CHUNK_FLOATS // shape[2]))
            group.create_array(
                "trajectories", shape=shape, chunks=(1, rows, shape[2]), dtype="f4"
            )
        if "done" not in group:
            group.create_array("done", shape=(shape[0],), chunks=(1,), dtype=bool)
        path = None if isinstance(out, type(group)) else str(out)
        return cls(group["trajectories"], group["done"], path)

    def pending(self):
        """Indices of the trajectories still to compute, ndarray of int."""
        if self.done is None:
            return np.arange(self.array.shape[0])
        return np.flatnonzero(~np.asarray(self.done[:]))

    def write(self, rows, trajectories):
        """Write trajectories (their data, then their completion flags)."""
        rows = np.atleast_1d(rows)
        for i, trajectory in zip(rows, trajectories, strict=True):
            self.array[int(i)] = trajectory
            if self.done is not None:
                self.done[int(i)] = True

    @staticmethod
    def write_to(path, i, trajectory):
        """Write trajectory ``i`` into the store at ``path`` (from a worker)."""
        group = open_zarr_group(path)
        group["trajectories"][int(i)] = trajectory
        group["done"][int(i)] = True

    def result(self):
        """The array written: in memory, the caller's, or the store's."""
        return self.array


class PartialForceStore:
    """Where one ``sample_partial_forces`` call writes its forces: a CSR
    matrix whose rows all hold ``width`` entries, in blocks of rows.

    Use :meth:`open`; ``out=None`` keeps them in memory, a path or zarr
    group gets a resumable store with arrays ``values`` and ``columns``
    (n_samples, width) and ``done`` (one flag per block of rows).
    """

    def __init__(self, values, columns, done=None, block=None):
        self.values, self.columns, self.done, self.block = values, columns, done, block

    @classmethod
    def open(
        cls, out, n_samples, width, block, fingerprint, n_features=None, states=None
    ):
        """Open (or resume) the output of one call; ``block`` rows are
        written (and flagged) together. ``fingerprint`` (the call's
        settings) and ``states`` (an array standing for its states, e.g. a
        few of them) identify the call. The columns are int32 when every
        column (below ``n_features``) and the number of stored values fit
        (so the CSR array shares them), else int64."""
        index_dtype = _index_dtype(n_samples * width, n_features)
        if out is None:
            return cls(
                np.empty((n_samples, width)), np.empty((n_samples, width), index_dtype)
            )
        group = open_zarr_group(out)
        key = _fingerprint(fingerprint, *([] if states is None else [states]))
        _claim(group, out, key, "values", "trajectories")
        chunks = (block, width)
        if "values" not in group:
            group.create_array(
                "values", shape=(n_samples, width), chunks=chunks, dtype="f8"
            )
        if "columns" not in group:
            group.create_array(
                "columns", shape=(n_samples, width), chunks=chunks, dtype=index_dtype
            )
        if "done" not in group:
            n_blocks = -(-n_samples // block)
            group.create_array("done", shape=(n_blocks,), chunks=(1,), dtype=bool)
        return cls(group["values"], group["columns"], group["done"], block)

    def is_done(self, b):
        """Whether block ``b`` was written by an earlier run."""
        return self.done is not None and bool(self.done[b])

    def write(self, b, rows, values, columns):
        """Write block ``b`` (rows ``rows``), then flag it."""
        self.values[rows] = values
        self.columns[rows] = columns
        if self.done is not None:
            self.done[b] = True

    def csr(self, n_features):
        """The forces as a CSR array of shape (n_samples, n_features)."""
        values, columns = np.asarray(self.values[:]), np.asarray(self.columns[:])
        n_samples, width = values.shape
        # Row pointers of the columns' dtype, so SciPy keeps them uncopied.
        pointers = np.arange(n_samples + 1, dtype=columns.dtype) * width
        F = sp.csr_array(
            (values.ravel(), columns.ravel(), pointers),
            shape=(n_samples, n_features),
        )
        F.has_sorted_indices = True
        return F


def _index_dtype(n_values, n_features):
    """int32 when ``n_values`` stored values and column indices below
    ``n_features`` (unknown: None) fit in it, else int64."""
    limit = np.iinfo(np.int32).max
    fits = n_features is not None and max(n_values, n_features) <= limit
    return np.int32 if fits else np.int64


def _write_trajectory(path, i, job, x0, settings):
    """Run ``job(x0, **settings)`` and write its trajectory into the store at
    ``path`` (on a worker: no data travel back)."""
    TrajectoryStore.write_to(path, i, job(x0, **settings))


def simulate_into(store, job, X0, settings, n_jobs=None, verbose=False, desc=None):
    """Run one trajectory job per pending initial state and write each into
    ``store`` as it finishes.

    With a path store each job writes its own trajectory (joblib processes
    or, under ``joblib.parallel_config(backend="dask")``, dask workers that
    share the file system); otherwise trajectories come back to this process,
    which writes them.

    Parameters
    ----------
    store : TrajectoryStore
    job : callable
        Module-level function ``job(x0, **settings) -> (T, N) array``.
    X0 : ndarray of shape (n_trajectories, N)
    settings : dict
    n_jobs : int or None
    verbose : bool
    desc : str, optional
        Progress bar label.

    Returns
    -------
    array-like of shape (n_trajectories, T, N)
        ``store.result()``.
    """
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    pending = store.pending()
    with tqdm(total=len(pending), disable=not verbose, desc=desc) as bar:
        if store.path is not None:
            jobs = (
                delayed(_write_trajectory)(store.path, i, job, X0[i], settings)
                for i in pending
            )
            for _ in Parallel(n_jobs=n_jobs, return_as="generator")(jobs):
                bar.update()
        else:
            jobs = (delayed(job)(X0[i], **settings) for i in pending)
            results = Parallel(n_jobs=n_jobs, return_as="generator")(jobs)
            for i, trajectory in zip(pending, results, strict=True):
                store.write([i], [trajectory])
                bar.update()
    return store.result()
