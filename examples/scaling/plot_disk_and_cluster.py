"""
Data on disk, and a Dask cluster
================================

The paper's largest data sets do not fit in memory (25.6 GB of Allen-Cahn
snapshots). skmacro never needs them to: every entry point that takes
states ``X`` reads them in blocks, so ``X`` may be a zarr array, an h5py
dataset, an ``np.memmap`` or a dask array. Simulations and partial forces
are written to zarr stores as they are produced, and a killed run resumes
with the same call.

The same code then spreads over a Dask cluster: simulations and parameter
searches go through joblib's Dask backend, and the statistics pass of
:class:`~skmacro.PartialForceDynamics` maps over the blocks of a dask
array on the workers. Here the cluster is a ``LocalCluster`` of two
workers; on a real cluster it would come from ``dask-jobqueue`` or
``dask-kubernetes``, with nothing else changed.

This example needs ``pip install "skmacro[distributed]"`` (dask,
distributed, zarr and h5py).
"""

# %%
# Simulating into a store
# -----------------------
# ``system.simulate(..., out=path)`` writes the trajectories to a zarr store
# (float32) as they are computed and returns the store's array; a second
# call with the same arguments finds the finished trajectories there and
# computes only the missing ones. Predator-Prey integrates its trajectories
# together, in batches that fit the memory budget, and writes each batch as
# it finishes; ``AllenCahn.simulate`` and ``LennardJones.simulate`` write
# each trajectory as it finishes.
import os
import shutil
import tempfile
import time
from pathlib import Path

import dask.array as da
import matplotlib.pyplot as plt
import numpy as np
from sklearn.pipeline import Pipeline

from skmacro import ClosureAutoencoder, PartialForceDynamics
from skmacro.metrics import rollout_error
from skmacro.sampling import sample_partial_forces
from skmacro.systems import PredatorPrey

TINY = os.environ.get("SKMACRO_EXAMPLE_SIZE") == "tiny"
n_train = 4 if TINY else 40
budget = {"max_epochs": 3} if TINY else {}

folder = Path(tempfile.mkdtemp(prefix="skmacro-example-"))
system = PredatorPrey()
X0 = system.sample_initial(n_train, random_state=0)
traj = system.simulate(
    X0, t_end=30.0, dt=0.01, method="euler", stride=10, out=folder / "train.zarr"
)
print(type(traj).__name__, traj.shape, traj.dtype)

start = time.perf_counter()
system.simulate(
    X0, t_end=30.0, dt=0.01, method="euler", stride=10, out=folder / "train.zarr"
)
print(f"the same call again: {time.perf_counter() - start:.2f} s (nothing to do)")

# %%
# States as a lazy dask array, forces into a store
# ------------------------------------------------
# ``da.from_zarr`` views the store without reading it (``inline_array=True``
# puts the store itself into every task that reads a block, so each worker
# opens it on its own). The partial forces
# are computed block by block and written as CSR chunks to their own store
# (``format="sparse"`` and an integer ``random_state``, so that a resumed run
# draws the same particles).
X = da.from_zarr(traj, inline_array=True).reshape(-1, system.n_features)  # (K, N)
F = sample_partial_forces(
    system, X, p=0.2, random_state=0, format="sparse", out=folder / "forces.zarr"
)
print(f"X: {X.shape}, chunks {X.chunksize}; F: {F.shape}, {F.nnz} stored forces")

# %%
# Fitting from disk
# -----------------
# The autoencoder streams shuffled blocks of ``X``; the dynamics model reads
# ``X`` once, reducing each configuration to a few numbers (the statistics
# of the quadratic form of its loss), and then trains on those alone.
pipe = Pipeline(
    [
        (
            "ae",
            ClosureAutoencoder(
                observables=system.observables,
                n_components=4,
                random_state=0,
                **budget,
            ),
        ),
        ("dyn", PartialForceDynamics(random_state=0, **budget)),
    ]
)
pipe.fit(X, F)

# %%
# A cluster
# ---------
# One torch thread per worker (``threads_per_worker=1``): several workers
# with several threads each would oversubscribe the cores. Inside
# ``joblib.parallel_config(backend="dask")``, ``n_jobs=-1`` sends the
# candidates of a search to the workers, and so it does the trajectories of
# ``AllenCahn.simulate`` and ``LennardJones.simulate`` (each worker then
# writes its own trajectories into the store, so the workers must share its
# file system). The dynamics model's statistics pass over a dask ``X`` runs
# on the cluster's workers as soon as a ``Client`` exists.
#
# ``processes=False`` keeps the two workers inside this Python process, so
# the example runs as it is in a notebook or a documentation build. Worker
# processes (the default) are what a real cluster has; a script that starts
# them locally must create the cluster under ``if __name__ == "__main__":``,
# since each worker process imports the script again.
import joblib
from dask.distributed import Client, LocalCluster
from sklearn.model_selection import GridSearchCV

cluster = LocalCluster(
    n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
)
client = Client(cluster)
print(client)

n_test = 2 if TINY else 10
t_test = 4.9 if TINY else 29.9
# Predator-Prey's simulator has no ``n_jobs``: it runs here, in this process.
test = system.simulate(
    system.sample_initial(n_test, random_state=1),
    t_end=t_test,
    dt=0.01,
    method="rk4",
    stride=10,
    out=folder / "test.zarr",
)
with joblib.parallel_config(backend="dask"):
    search = GridSearchCV(pipe, {"ae__lambda_cond": [1e-6, 1e-2]}, cv=2, n_jobs=-1).fit(
        X, F
    )
print("best:", search.best_params_)

# %%
# The test trajectories are read from their store, one at a time.
t = np.arange(test.shape[1]) * 0.1
error, Z_true, Z_pred = rollout_error(search.best_estimator_, t, test)
print(f"test error of the search's pick: {error:.2e}")
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(t, Z_true[0, :, 0], "k", label="true")
ax.plot(t, Z_pred[0, :, 0], "--", label="predicted")
ax.set_xlabel("t")
ax.set_ylabel("mean prey")
ax.legend()
fig.tight_layout()

# %%
# Clean up: close the cluster and delete the stores.
client.close()
cluster.close()
shutil.rmtree(folder)

# %%
# Notes for a real cluster
# ------------------------
# * Large in-memory inputs of a search are sent to every task: scatter them
#   once (``client.scatter(X, broadcast=True)``), or keep them on disk as a
#   dask array, as here, whose folds are indexed lazily.
# * One GPU per worker (``dask-cuda``'s ``LocalCUDACluster``) and
#   ``device="cuda"`` run a search on several GPUs; training and the
#   statistics pass then stay on the device.
