"""Reading rows of ``X`` wherever it lives: the one place that knows NumPy
arrays, memory maps, zarr arrays, h5py datasets and dask arrays.

Every pass over the data reads row blocks through :func:`take_rows`, so an
array on disk or on a cluster is never loaded whole, and an in-memory array
takes the same path (a model does not depend on where its data live).
"""

import numbers

import numpy as np
import scipy.sparse as sp
from sklearn.utils import assert_all_finite, check_array

__all__ = ["check_rows", "take_rows", "is_dask", "n_rows"]


def is_dask(X):
    """Whether ``X`` is a dask array (imported lazily: dask is optional)."""
    return type(X).__module__.startswith("dask.") and hasattr(X, "compute")


def _in_memory(X):
    """NumPy arrays (memory maps of float32 or float64 included), scipy
    sparse matrices (which ``check_array`` rejects with its usual message)
    and everything NumPy converts cheaply (lists, pandas, torch tensors)."""
    if isinstance(X, np.memmap) and X.dtype not in (np.float32, np.float64):
        # Converted whole, it would leave the disk: read in blocks instead.
        return False
    return (
        not hasattr(X, "shape")
        or hasattr(X, "iloc")
        or isinstance(X, np.ndarray)
        or sp.issparse(X)
        or type(X).__module__.startswith("torch")  # a tensor, read as its array
    )


def check_rows(X, name="X", n_features=None, allow_nd=False, ensure_min_samples=1):
    """Validate the shape and dtype of a row-indexable array without reading
    its values.

    In-memory input (a NumPy array, a list, a pandas ``DataFrame``) goes
    through scikit-learn's ``check_array`` without a dtype change for
    float32 and float64 (a memory map stays one); a zarr array, an h5py
    dataset or a dask array is kept as is. Values are checked for NaN and
    inf as they are read (:func:`take_rows`).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    name : str, default="X"
    n_features : int, optional
        Required number of columns.
    allow_nd : bool, default=False
    ensure_min_samples : int, default=1

    Returns
    -------
    array-like of shape (n_samples, n_features)
    """
    if _in_memory(X):
        X = check_array(
            X,
            dtype=("float32", "float64"),
            ensure_all_finite=False,
            input_name=name,
            allow_nd=allow_nd,
            ensure_min_samples=ensure_min_samples,
            copy=False,
        )
    else:
        shape, dtype = getattr(X, "shape", None), getattr(X, "dtype", None)
        if shape is None or dtype is None or not hasattr(X, "__getitem__"):
            raise TypeError(
                f"{name} must be an array with NumPy-style row slicing (ndarray, "
                f"np.memmap, zarr.Array, h5py.Dataset, dask.array), got "
                f"{type(X).__name__}"
            )
        kind = np.dtype(dtype).kind
        if kind == "c":
            raise ValueError("Complex data not supported")
        if kind not in "fiub":
            raise ValueError(f"{name} must hold numbers, got dtype {dtype}")
        if len(shape) != 2 and not allow_nd:
            raise ValueError(
                f"Expected a 2-dimensional {name} (n_samples, n_features), got "
                f"shape {tuple(shape)}"
            )
        if np.isnan(shape[0]):
            raise ValueError(
                f"{name} is a dask array of unknown length (chunks of unknown "
                f"size, e.g. after boolean indexing): call "
                f"{name}.compute_chunk_sizes() first"
            )
        if shape[0] < ensure_min_samples:
            raise ValueError(
                f"{name} has {shape[0]} sample(s); at least {ensure_min_samples} "
                "required"
            )
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(
            f"{name} has {X.shape[1]} features (columns), expected {n_features}"
        )
    return X


def n_rows(X):
    """The number of rows of an array-like."""
    return X.shape[0] if hasattr(X, "shape") else len(X)


def take_rows(X, rows, dtype=np.float32, name="X", check_finite=True):
    """Some rows of ``X`` as an in-memory array.

    Parameters
    ----------
    X : array-like of shape (n_samples, ...)
        Validated by :func:`check_rows`.
    rows : slice, int or ndarray of int
        Which rows (an index array in any order).
    dtype : numpy dtype or None, default=float32
        Cast the block to this dtype (None keeps the stored one).
    name : str, default="X"
    check_finite : bool, default=True
        Raise a ``ValueError`` if the block holds NaN or inf.

    Returns
    -------
    ndarray of shape (n_rows, ...)
    """
    if isinstance(rows, slice):
        block = X[rows]
    elif isinstance(rows, numbers.Integral):
        row = int(rows) % n_rows(X)
        block = X[row : row + 1]
    else:
        rows = np.asarray(rows)
        if type(X).__module__.startswith("h5py"):
            # h5py reads strictly increasing indices only.
            unique, inverse = np.unique(rows % n_rows(X), return_inverse=True)
            block = X[unique][inverse]
        else:
            block = X[rows]
    if is_dask(block):
        block = block.compute()
    stored = block
    with np.errstate(over="ignore"):  # overflow is reported below
        block = np.asarray(block, dtype=dtype)
    if not block.flags.writeable:
        # A read-only view (a memory map opened with mode="r"): torch wants
        # its own memory.
        block = block.copy()
    if check_finite:
        try:
            assert_all_finite(block, input_name=name)
        except ValueError:
            if np.all(np.isfinite(np.asarray(stored))):
                raise ValueError(
                    f"{name} holds values beyond the range of {np.dtype(dtype)} "
                    "(about 3.4e38 for float32)"
                ) from None
            raise ValueError(f"{name} contains NaN or infinity") from None
    return block
