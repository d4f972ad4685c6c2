"""Data that need not fit in memory: memory maps, zarr arrays, h5py datasets
and dask arrays give the same models as in-memory arrays, and a fit on a
memory map holds far less than the map."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from skmacro import ClosureAutoencoder, PartialForceDynamics
from skmacro.sampling import sample_partial_forces


def _storages(X, tmp_path):
    """X in every supported container, each read back from disk."""
    stores = {"ndarray": X}
    memmap = np.lib.format.open_memmap(
        tmp_path / "X.npy", mode="w+", dtype=X.dtype, shape=X.shape
    )
    memmap[:] = X
    memmap.flush()
    stores["memmap"] = np.load(tmp_path / "X.npy", mmap_mode="r")
    zarr = pytest.importorskip("zarr")
    z = zarr.create_array(
        store=str(tmp_path / "X.zarr"),
        shape=X.shape,
        chunks=(64, X.shape[1]),
        dtype=X.dtype,
    )
    z[:] = X
    stores["zarr"] = zarr.open_array(str(tmp_path / "X.zarr"), mode="r")
    h5py = pytest.importorskip("h5py")
    handle = h5py.File(tmp_path / "X.h5", "w")
    handle.create_dataset("X", data=X, chunks=(64, X.shape[1]))
    stores["h5py"] = handle["X"]
    da = pytest.importorskip("dask.array")
    stores["dask"] = da.from_zarr(str(tmp_path / "X.zarr"))
    return stores


def test_every_storage_gives_the_same_pipeline(system, pp_data, tmp_path):
    X, F = pp_data
    X = X.astype(np.float32)
    F_sparse = sample_partial_forces(system, X, 0.2, random_state=0, format="sparse")
    pipe = Pipeline(
        [
            (
                "ae",
                ClosureAutoencoder(
                    observables=system.observables,
                    n_components=4,
                    max_epochs=2,
                    batch_size=64,
                    random_state=0,
                ),
            ),
            ("dyn", PartialForceDynamics(max_epochs=3, random_state=0)),
        ]
    )
    reference = clone(pipe).fit(X, F_sparse)
    expected = reference.predict(X[:10])
    for name, stored in _storages(X, tmp_path).items():
        fitted = clone(pipe).fit(stored, F_sparse)
        np.testing.assert_allclose(
            fitted.predict(X[:10]), expected, rtol=1e-5, atol=1e-6, err_msg=name
        )
        assert fitted.score(stored, F_sparse) == pytest.approx(
            reference.score(X, F_sparse), rel=1e-5
        ), name


_MEMORY_PROBE = """
import sys, threading, time
import numpy as np
import torch
from skmacro import ClosureAutoencoder

def anon_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])

torch.set_num_threads(1)
X = np.load(sys.argv[1], mmap_mode="r")
ae = ClosureAutoencoder(n_components=3, hidden=(16,), max_epochs=1, random_state=0)
ae.fit(X[:64])  # imports and first-call allocations out of the measurement
base, peak, running = anon_kib(), [0], [True]

def watch():
    while running[0]:
        peak[0] = max(peak[0], anon_kib())
        time.sleep(0.005)

thread = threading.Thread(target=watch)
thread.start()
ClosureAutoencoder(n_components=3, hidden=(16,), max_epochs=1, random_state=0).fit(X)
running[0] = False
thread.join()
print((peak[0] - base) * 1024)
"""


def test_a_fit_on_a_memory_map_holds_less_than_half_of_it(tmp_path):
    n_rows, n_features = 12_000, 8_000  # 384 MB of float32
    path = tmp_path / "big.npy"
    X = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.float32, shape=(n_rows, n_features)
    )
    rng = np.random.default_rng(0)
    for start in range(0, n_rows, 1000):
        X[start : start + 1000] = rng.normal(size=(1000, n_features))
    X.flush()
    del X
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(_MEMORY_PROBE))
    out = subprocess.run(
        [sys.executable, str(probe), str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    added = int(out.strip().splitlines()[-1])
    size = n_rows * n_features * 4
    assert added < size / 2, f"fit added {added / 2**20:.0f} MiB of anonymous memory"


def test_reading_rows_of_any_container(tmp_path):
    """take_rows and check_rows: repeated and negative indices on h5py, an
    integer memory map read in blocks, and clear errors for dask arrays of
    unknown length and for values beyond float32."""
    from skmacro._arrays import check_rows, take_rows

    X = np.arange(24.0).reshape(6, 4)
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "X.h5", "w") as handle:
        handle["X"] = X
        rows = np.array([3, 3, 1, -1])
        np.testing.assert_array_equal(take_rows(handle["X"], rows), X[rows])
    np.testing.assert_array_equal(take_rows(X, -1), X[-1:])

    ints = np.lib.format.open_memmap(
        tmp_path / "ints.npy", mode="w+", dtype=np.int16, shape=(6, 4)
    )
    ints[:] = X
    assert check_rows(ints) is ints  # not converted whole into memory
    np.testing.assert_array_equal(take_rows(ints, slice(2, 4)), X[2:4])

    da = pytest.importorskip("dask.array")
    filtered = da.from_array(X, chunks=(2, 4))
    filtered = filtered[filtered[:, 0] >= 0]
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        check_rows(filtered)

    huge = X.copy()
    huge[1, 2] = 1e39
    with pytest.raises(ValueError, match="beyond the range of float32"):
        take_rows(huge, slice(None))
    huge[1, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        take_rows(huge, slice(None))


def test_nested_subsets_read_the_rows_they_show():
    import torch
    from torch.utils.data import Subset

    from skmacro._torch_data import BatchIterator, TensorDataset

    base = TensorDataset(np.arange(3.0)[:, None])
    nested = Subset(Subset(base, [0, 2, 1]), [1, 2, 0])
    expected = torch.stack([nested[i][0] for i in range(3)])
    (X, _), *_ = list(BatchIterator(nested, batch_size=3))
    torch.testing.assert_close(X, expected)
