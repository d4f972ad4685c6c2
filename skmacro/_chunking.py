"""Row chunks that bound the memory of per-row work on large ``X``: every
memory budget of the package is defined here."""

import numpy as np

#: Floats one chunk of per-row work may hold at once (64 MiB of float32).
#: glibc serves blocks this large with fresh mappings and returns them when
#: freed; eight times smaller ones came from its heap, which fragmented and
#: kept gigabytes resident after encoding 5,000 x 307,200 states.
FLOAT_BUDGET = 2**24
#: Numbers (random keys and forces) one chunk of partial-force sampling holds.
SAMPLING_BUDGET = 2**20
#: Floats of the row sample a PCA embedding is fitted on.
EMBEDDING_FIT_BUDGET = 2**26
#: Rows of latent states evaluated at once by a latent model (d floats each).
LATENT_ROWS = 2**16
#: Floats of consecutive rows read together when streaming shuffled batches
#: of X (4 MiB of float32), and floats of the shuffle buffer (128 MiB).
SHUFFLE_BLOCK = 2**20
SHUFFLE_BUFFER = 2**25
#: Floats per chunk of a pass that makes float64 temporaries of its input.
STATISTICS_BUDGET = 2**22


def row_chunks(n_rows, floats_per_row, budget=FLOAT_BUDGET):
    """Slices covering ``range(n_rows)`` whose chunk holds at most ``budget``
    floats (at least one row each).

    Parameters
    ----------
    n_rows : int
    floats_per_row : int
        Floats the per-row work holds, e.g. ``d * N`` for a Jacobian.
    budget : int, default=FLOAT_BUDGET

    Returns
    -------
    list of slice

    Examples
    --------
    >>> row_chunks(5, 2, budget=4)
    [slice(0, 2, None), slice(2, 4, None), slice(4, 6, None)]
    """
    size = max(1, budget // max(floats_per_row, 1))
    return [slice(s, s + size) for s in range(0, n_rows, size)]


def index_chunks(rows, floats_per_row, budget=FLOAT_BUDGET):
    """Chunks of a row selection, each within ``budget`` floats.

    Parameters
    ----------
    rows : slice with a stop, or ndarray of int
        Rows to cover: a slice stays a list of slices, which read contiguous
        blocks; an index array is cut into index arrays.
    floats_per_row : int
    budget : int, default=FLOAT_BUDGET

    Returns
    -------
    list of slice or list of ndarray of int

    Examples
    --------
    >>> index_chunks(np.array([4, 7, 9]), 2, budget=4)
    [array([4, 7]), array([9])]
    """
    if isinstance(rows, slice):
        start, stop, step = rows.start or 0, rows.stop, rows.step or 1
        if step != 1:
            rows = np.arange(start, stop, step)
        else:
            return [
                slice(start + s.start, min(start + s.stop, stop))
                for s in row_chunks(stop - start, floats_per_row, budget)
            ]
    size = max(1, budget // max(floats_per_row, 1))
    return [rows[s : s + size] for s in range(0, len(rows), size)]


def evenly_spaced(rows, n):
    """Up to ``n`` evenly spaced entries of ``rows``, first and last included.

    Parameters
    ----------
    rows : ndarray of int
    n : int

    Returns
    -------
    ndarray of int
    """
    rows = np.sort(rows)
    return rows[np.linspace(0, len(rows) - 1, min(len(rows), n)).astype(int)]
