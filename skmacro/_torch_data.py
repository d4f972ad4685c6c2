"""Datasets and batch iterators of the estimators' training loops.

skorch's default ``DataLoader`` fetches and collates one row at a time, which
dominates the cost of an epoch when a model step takes microseconds (the
dynamics model trains on a few numbers per configuration). Slicing whole
tensors with one index per batch is one to two orders of magnitude faster
(:class:`TensorDataset`, :class:`BatchIterator`). States ``X``, which may
not fit in memory, are streamed in blocks (:class:`RowStream`,
:class:`StreamingBatches`).
"""

import math

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ._arrays import take_rows
from ._chunking import SHUFFLE_BLOCK, SHUFFLE_BUFFER


def _take(data, index):
    if data is None:
        return None
    if isinstance(data, dict):
        return {key: value[index] for key, value in data.items()}
    return data[index]


def _length(data):
    if isinstance(data, dict):
        return len(next(iter(data.values())))
    return len(data)


def as_float_tensor(X, dtype=torch.float32):
    """Convert an array (or a dict of arrays) to tensors of ``dtype``."""
    if isinstance(X, dict):
        return {key: as_float_tensor(value, dtype) for key, value in X.items()}
    if isinstance(X, torch.Tensor):
        return X.to(dtype)
    return torch.as_tensor(np.asarray(X), dtype=dtype)


class TensorDataset(Dataset):
    """Rows of a tensor, or of a dict of tensors with the same first dimension.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, ...) or dict of such tensors
    y : torch.Tensor of shape (n_samples, ...), optional
    """

    def __init__(self, X, y=None):
        self.X = as_float_tensor(X)
        self.y = None if y is None else as_float_tensor(y)

    def __len__(self):
        return _length(self.X)

    def __getitem__(self, index):
        return _take(self.X, index), _take(self.y, index)


def _unwrap(dataset):
    """Return the underlying ``TensorDataset`` and the row indices it exposes."""
    index = None
    while isinstance(dataset, Subset):
        sub = torch.as_tensor(np.asarray(dataset.indices), dtype=torch.long)
        # Outer positions index the inner subset's own positions.
        index = sub if index is None else sub[index]
        dataset = dataset.dataset
    if not isinstance(dataset, TensorDataset):
        raise TypeError(
            f"BatchIterator needs a TensorDataset (or a Subset of one), got "
            f"{type(dataset).__name__}"
        )
    if index is None:
        index = torch.arange(len(dataset))
    return dataset, index


class BatchIterator:
    """Iterate over mini-batches ``(X_batch, y_batch)`` of a ``TensorDataset``.

    Parameters
    ----------
    dataset : TensorDataset or torch.utils.data.Subset of one
    batch_size : int, default=256
    shuffle : bool, default=False
    seed : int, optional
        Seed of the shuffling generator; each pass draws a new permutation.
    """

    def __init__(self, dataset, batch_size=256, shuffle=False, seed=None):
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self._generator = torch.Generator()
        if seed is not None:
            self._generator.manual_seed(int(seed))
        else:
            self._generator.seed()

    def __len__(self):
        n = len(self.dataset)
        return -(-n // self.batch_size)

    def __iter__(self):
        base, index = _unwrap(self.dataset)
        if self.shuffle:
            index = index[torch.randperm(len(index), generator=self._generator)]
        for start in range(0, len(index), self.batch_size):
            rows = index[start : start + self.batch_size]
            yield _take(base.X, rows), _take(base.y, rows)


class RowStream(Dataset):
    """Some rows of an array-like ``X`` (in memory, on disk or a dask array),
    read in blocks by :class:`StreamingBatches`.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    rows : ndarray of int
        The rows of ``X`` this dataset holds.
    """

    def __init__(self, X, rows):
        self.X = X
        self.rows = np.sort(np.asarray(rows))

    def __len__(self):
        return len(self.rows)


class StreamingBatches:
    """Mini-batches ``(X_batch, None)`` of a :class:`RowStream`, read block by
    block through a bounded shuffle buffer.

    Each pass cuts the stream's (sorted) rows into blocks of consecutive
    rows, ``SHUFFLE_BLOCK`` floats each; with ``shuffle`` it visits the
    blocks in a random order, reads a buffer of them at a time (an eighth of
    the data, at least four blocks and at most ``SHUFFLE_BUFFER`` floats),
    shuffles those rows and draws batches from them, carrying the remainder
    to the next buffer. Rows of one block always share a buffer; a data set
    of up to four blocks is shuffled as a whole. The block and buffer sizes
    depend on the data's size only, so the batches (and the fitted model)
    do not depend on where ``X`` is stored.

    Parameters
    ----------
    stream : RowStream
    batch_size : int
    shuffle : bool, default=False
    seed : int, optional
        Seed of the first pass; pass ``k`` uses ``seed + k``.
    """

    def __init__(self, stream, batch_size=256, shuffle=False, seed=None):
        self.stream = stream
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = seed
        self.passes = 0
        width = stream.X.shape[1]
        self.block_rows = max(1, SHUFFLE_BLOCK // width)
        # An eighth of the data, between SHUFFLE_BLOCK * 4 and SHUFFLE_BUFFER
        # floats: small data sets are shuffled whole, large ones never hold
        # more than a fraction of themselves.
        total = len(stream) * width
        buffer = min(max(total // 8, 4 * SHUFFLE_BLOCK), SHUFFLE_BUFFER)
        self.buffer_blocks = max(1, buffer // (width * self.block_rows))

    def __len__(self):
        return math.ceil(len(self.stream) / self.batch_size)

    def __iter__(self):
        rows = self.stream.rows
        rng = np.random.default_rng(
            None if self.seed is None else self.seed + self.passes
        )
        self.passes += 1
        starts = np.arange(0, len(rows), self.block_rows)
        if self.shuffle:
            starts = starts[rng.permutation(len(starts))]
        size, carry, data = self.batch_size, None, None
        for g in range(0, len(starts), self.buffer_blocks):
            group = starts[g : g + self.buffer_blocks]
            index = np.concatenate([rows[s : s + self.block_rows] for s in group])
            del data  # one buffer in memory at a time
            data = take_rows(self.stream.X, index)
            # Batches index the buffer through a permutation: no shuffled copy.
            order = rng.permutation(len(data)) if self.shuffle else np.arange(len(data))
            start = 0
            if carry is not None:
                start = min(size - len(carry), len(data))
                carry = np.concatenate([carry, data[order[:start]]])
                if len(carry) < size:
                    continue
                yield torch.from_numpy(carry), None
                carry = None
            full = start + (len(data) - start) // size * size
            for s in range(start, full, size):
                yield torch.from_numpy(data[order[s : s + size]]), None
            if full < len(data):
                carry = data[order[full:]]
        if carry is not None:
            yield torch.from_numpy(carry), None
