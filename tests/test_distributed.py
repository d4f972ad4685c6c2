"""The same code on a dask.distributed cluster: a parameter search through
joblib's dask backend, the statistics pass mapped over a dask array's
blocks, and simulations whose workers write their own trajectories."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, GroupKFold

from skmacro.sampling import sample_partial_forces

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")
joblib = pytest.importorskip("joblib")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()


def test_grid_search_on_a_cluster_equals_one_process(client, pp_data, make_pipe):
    X, F = pp_data
    groups = np.repeat(np.arange(6), len(X) // 6)
    search = GridSearchCV(
        make_pipe(ae_epochs=2, dyn_epochs=3),
        {"ae__lambda_cond": [0.0, 1e-4]},
        cv=GroupKFold(2),
    )
    local = clone(search).set_params(n_jobs=1).fit(X, F, groups=groups)
    with joblib.parallel_config(backend="dask"):
        remote = clone(search).set_params(n_jobs=-1).fit(X, F, groups=groups)
    assert remote.best_params_ == local.best_params_
    np.testing.assert_allclose(
        remote.cv_results_["mean_test_score"],
        local.cv_results_["mean_test_score"],
        rtol=1e-5,
    )


def test_statistics_pass_maps_over_dask_blocks(client, system, pp_data, fitted_ae):
    from skmacro import PartialForceDynamics

    X, _ = pp_data
    F = sample_partial_forces(system, X, 0.2, random_state=0, format="sparse")
    dyn = PartialForceDynamics(max_epochs=3, random_state=0)
    local = clone(dyn).fit(fitted_ae.transform(X), F)
    lazy = da.from_array(X, chunks=(97, -1))
    remote = clone(dyn).fit(fitted_ae.transform(lazy), F)
    np.testing.assert_allclose(
        remote.history_[:, "train_loss"], local.history_[:, "train_loss"], rtol=1e-5
    )
    Z = fitted_ae.transform(X[:5])
    np.testing.assert_allclose(remote.predict(Z), local.predict(Z), rtol=1e-5)
    # Workers got a copy without the optimizer; the user's encoder keeps it.
    assert fitted_ae.optimizer_ is not None


def test_workers_write_their_own_trajectories(client, tmp_path):
    from skmacro.systems import AllenCahn

    system = AllenCahn(n_grid=16)
    X0 = system.sample_initial(4, random_state=0)
    settings = dict(t_end=20 / 16**2, method="strang")
    expected = system.simulate(X0, **settings)
    with joblib.parallel_config(backend="dask"):
        stored = system.simulate(X0, **settings, out=tmp_path / "t.zarr", n_jobs=-1)
    np.testing.assert_array_equal(stored[:], expected)


def _fit_on_a_lazy_copy(encoder, X, F):
    from skmacro import PartialForceDynamics

    Z = encoder.transform(da.from_array(X, chunks=(97, -1)))
    return PartialForceDynamics(max_epochs=1, random_state=0).fit(Z, F).history_


def test_statistics_pass_inside_a_task_does_not_hold_the_workers(
    system, pp_data, fitted_ae
):
    # A search on the cluster fits on a dask X inside a task: the pass's own
    # tasks must still find a worker thread when the task holds the only one.
    X, _ = pp_data
    F = sample_partial_forces(system, X, 0.2, random_state=0, format="sparse")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        history = client.submit(_fit_on_a_lazy_copy, fitted_ae, X, F).result(
            timeout=120
        )
    assert np.isfinite(history[-1, "train_loss"])
