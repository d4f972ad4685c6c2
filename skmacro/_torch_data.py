"""Datasets and batch iterators for in-memory tensors, used as skorch's
``dataset`` and ``iterator_*``.

skorch's default ``DataLoader`` fetches and collates one row at a time, which
dominates the cost of an epoch when a model step takes microseconds (the
dynamics model trains on a few numbers per configuration). Slicing whole
tensors with one index per batch is one to two orders of magnitude faster.
"""

import numpy as np
import torch
from torch.utils.data import Dataset, Subset


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
        index = sub if index is None else index[sub]
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
