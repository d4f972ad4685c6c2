"""The encoder protocol: a second, minimal encoder plugs into the dynamics,
the rollout, the score and the metrics exactly as ClosureAutoencoder does."""

import numpy as np
import pytest
import torch
from dense_jacobian import DenseJacobian
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_array

from skmacro import LatentArray, PartialForceDynamics, simulate
from skmacro.encoders import Encoder, JacobianBatch, linked_encoder
from skmacro.forces import PartialForces
from skmacro.metrics import make_macro_scorer, rollout_error
from skmacro.statistics import partial_force_statistics


class LinearEncoder(TransformerMixin, BaseEstimator):
    """``z = (phi*(x), V (x - mean))``: the observables and the leading
    principal components of the states."""

    def __init__(self, observables, n_closure=2):
        self.observables = observables
        self.n_closure = n_closure

    def fit(self, X, y=None):
        X = check_array(X, dtype=np.float32)
        self.n_features_in_ = X.shape[1]
        self.mean_ = X.mean(axis=0)
        self.components_ = np.linalg.svd(X - self.mean_, full_matrices=False)[2][
            : self.n_closure
        ]
        self.n_observables_ = self.observables(torch.as_tensor(X[:1])).shape[1]
        self.n_components_ = self.n_observables_ + self.n_closure
        self.size_agnostic_ = False
        Z = self._encode(torch.as_tensor(X)).numpy()
        self.latent_mean_, self.latent_scale_ = Z.mean(axis=0), Z.std(axis=0)
        return self

    def _encode(self, x):
        closure = (x - torch.as_tensor(self.mean_)) @ torch.as_tensor(
            self.components_
        ).T
        return torch.cat([self.observables(x), closure], dim=1)

    def transform(self, X):
        X = check_array(X, dtype=np.float32)
        return LatentArray(self._encode(torch.as_tensor(X)).numpy(), self, X)

    def inverse_transform(self, Z):
        return np.asarray(Z)[:, self.n_observables_ :] @ self.components_ + self.mean_

    def get_feature_names_out(self, input_features=None):
        names = [f"z*_{i}" for i in range(self.n_observables_)]
        return np.asarray(names + [f"pc_{i}" for i in range(self.n_closure)], object)

    def iter_jacobians(self, X, rows=None):
        rows = np.arange(len(X)) if rows is None else np.arange(len(X))[rows]
        for chunk in np.array_split(rows, max(1, len(rows) // 100)):
            x = torch.as_tensor(np.asarray(X[chunk], dtype=np.float32))
            J_o = torch.func.vmap(
                torch.func.jacrev(lambda r: self.observables(r[None])[0])
            )(x)
            V = torch.as_tensor(self.components_).expand(len(x), -1, -1)
            yield chunk, self._encode(x), DenseJacobian(torch.cat([J_o, V], dim=1))


@pytest.fixture(scope="module")
def linear_pipe(system, pp_data):
    X, F = pp_data
    pipe = Pipeline(
        [
            ("enc", LinearEncoder(system.observables)),
            ("dyn", PartialForceDynamics(random_state=0)),
        ]
    )
    return pipe.fit(X, F)


def test_a_second_encoder_satisfies_the_protocol(linear_pipe):
    encoder = linear_pipe[0]
    assert isinstance(encoder, Encoder)
    (_, _, J), *_ = encoder.iter_jacobians(np.zeros((3, 100), np.float32))
    assert isinstance(J, JacobianBatch)
    found, _ = linked_encoder(encoder.transform(np.zeros((3, 100))))
    assert found is encoder


def test_a_second_encoder_trains_scores_and_rolls_out(system, pp_data, linear_pipe):
    X, F = pp_data
    # The dynamics learned the observables' velocity from partial forces.
    assert linear_pipe.score(X, F) > 0.5
    assert make_macro_scorer()(linear_pipe, X, F) == pytest.approx(
        linear_pipe.score(X, F)
    )
    test = system.simulate(system.sample_initial(3, random_state=5), 5.0, 0.01)
    t = np.arange(test.shape[1]) * 0.01
    error, _, Z_pred = rollout_error(linear_pipe, t, test)
    assert Z_pred.shape == (3, test.shape[1], 4) and error < 0.1
    assert simulate(linear_pipe, test[:, 0], t[:11]).shape == (3, 11, 4)


def test_rollouts_show_progress_on_request(system, linear_pipe, capsys):
    test = system.simulate(system.sample_initial(2, random_state=6), 0.1, 0.01)
    t = np.arange(test.shape[1]) * 0.01
    quiet = rollout_error(linear_pipe, t, test)
    assert "rollout" not in capsys.readouterr().err
    shown = rollout_error(linear_pipe, t, test, verbose=True)
    assert f"{len(t) - 1}/{len(t) - 1}" in capsys.readouterr().err
    assert shown[0] == quiet[0]


def test_rollout_error_reads_test_trajectories_from_a_zarr_array(system, linear_pipe):
    zarr = pytest.importorskip("zarr")
    test = system.simulate(system.sample_initial(2, random_state=6), 1.0, 0.01)
    t = np.arange(test.shape[1]) * 0.01
    stored = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=test.shape,
        dtype=test.dtype,
        chunks=(1, *test.shape[1:]),
    )
    stored[:] = test
    error, Z_true, _ = rollout_error(linear_pipe, t, stored)
    expected, Z_expected, _ = rollout_error(linear_pipe, t, test)
    assert error == pytest.approx(expected)
    np.testing.assert_allclose(Z_true, Z_expected)


def test_statistics_of_a_dense_encoder_are_the_quadratic_form(
    system, pp_data, linear_pipe
):
    """With all forces, b = G^-1 J f, A = G^-1 and c = |f|^2 (Eq. 10)."""
    X = pp_data[0][:20]
    f = system.forces(X)
    encoder = linear_pipe[0]
    stats = partial_force_statistics(encoder, X, PartialForces(f, 100), loss="x")
    J = torch.cat([Jb.J for _, _, Jb in encoder.iter_jacobians(X)]).double()
    G_inv = torch.linalg.inv(J @ J.transpose(1, 2))
    f = torch.as_tensor(f)
    torch.testing.assert_close(stats["b"], torch.einsum("bij,bjn,bn->bi", G_inv, J, f))
    torch.testing.assert_close(stats["A"], G_inv)
    torch.testing.assert_close(stats["c"], (f**2).sum(dim=1))
    torch.testing.assert_close(stats["y"], torch.einsum("bdn,bn->bd", J, f))


def test_an_object_that_is_not_an_encoder_is_named(pp_data):
    class NotAnEncoder:
        pass

    Z = LatentArray(np.zeros((3, 2)), NotAnEncoder(), np.zeros((3, 100)))
    with pytest.raises(TypeError, match="NotAnEncoder is not a fitted encoder"):
        PartialForceDynamics().fit(Z, np.zeros((3, 100)))


def test_latent_array_selections():
    """Row selections keep the link to the states; column selections (by a
    slice or an index array) are plain arrays."""
    X = np.arange(12.0).reshape(4, 3)
    Z = LatentArray(X[:, :2] * 10, object(), X)
    rows = Z[[2, 0]]
    assert isinstance(rows, LatentArray)
    np.testing.assert_array_equal(rows.source, X[[2, 0]])
    assert isinstance(Z[1:, :], LatentArray)
    for columns in (Z[:, :1], Z[:, np.arange(2)], Z[:, [0, 1]]):
        assert type(columns) is np.ndarray
