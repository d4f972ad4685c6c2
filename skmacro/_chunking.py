"""Row chunks that bound the memory of per-row work on large ``X``."""

#: Floats one chunk may hold at once (64 MiB of float32).
FLOAT_BUDGET = 2**24


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
