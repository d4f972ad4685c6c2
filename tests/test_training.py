"""The step-budget schedule and ensembles of latent networks."""

import pickle

import numpy as np
import pytest
import torch
from dense_jacobian import DenseJacobian
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from skmacro import LatentArray, PartialForceDynamics, simulate
from skmacro.metrics import mean_relative_error, rollout_error
from skmacro.nn import QuadraticFormLoss

#: A damped rotation, dx/dt = M x.
ROTATION = np.array([[-0.3, 1.0], [-1.0, -0.3]])


class IdentityEncoder(TransformerMixin, BaseEstimator):
    """``z = x``: every coordinate is an observable, ``J = I``."""

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float32)
        self.n_features_in_ = self.n_components_ = self.n_observables_ = X.shape[1]
        self.size_agnostic_ = False
        self.latent_mean_, self.latent_scale_ = X.mean(axis=0), X.std(axis=0)
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=np.float32)
        return LatentArray(X.copy(), self, X)

    def inverse_transform(self, Z):
        return np.asarray(Z)

    def get_feature_names_out(self, input_features=None):
        return np.asarray([f"x{i}" for i in range(self.n_features_in_)], object)

    def iter_jacobians(self, X, rows=None):
        rows = np.arange(len(X)) if rows is None else np.arange(len(X))[rows]
        x = torch.as_tensor(np.asarray(X[rows], dtype=np.float32))
        eye = torch.eye(x.shape[1]).expand(len(x), -1, -1)
        yield rows, x, DenseJacobian(eye)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The latent networks here are tiny: a second intra-op thread only adds
    synchronisation, which on a busy machine costs more than the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def linear_data():
    """64 states of a linear field with exact forces, encoded by the identity."""
    X = np.random.default_rng(0).uniform(-1, 1, size=(64, 2)).astype(np.float32)
    F = X @ ROTATION.T
    return IdentityEncoder().fit(X).transform(X), F


def test_a_step_budget_trains_a_tiny_data_set_to_its_solution(linear_data):
    """58 training rows make one step per epoch: the default budget, not an
    epoch count, sets how long training runs, and it recovers the field
    (200 epochs, the former default, leave it 7% off)."""
    Z, F = linear_data
    dyn = PartialForceDynamics(random_state=0).fit(Z, F)
    last = dyn.history_[-1]
    assert last["step"] == last["epoch"] == dyn.min_steps
    # One history row per EVAL_STEPS (25) steps.
    assert len(dyn.history_) == dyn.min_steps // 25
    assert dyn.history_[0]["lr"] > 50 * last["lr"]  # the cosine decayed
    exact = np.asarray(Z) @ ROTATION.T
    error = np.abs(dyn.predict(Z) - exact).max()
    assert error < 0.02 * np.abs(exact).max()


def test_the_budget_in_epochs(linear_data):
    Z, F = linear_data
    # At least min_epochs epochs: 29 rows per batch make two steps an epoch.
    dyn = PartialForceDynamics(
        min_steps=5, min_epochs=30, batch_size=29, random_state=0
    ).fit(Z, F)
    assert dyn.history_[:, "epoch"] == [13, 26, 30]
    assert dyn.history_[-1]["step"] == 60
    # max_epochs overrides both.
    dyn.set_params(max_epochs=3).fit(Z, F)
    assert dyn.history_[:, "epoch"] == [3] and dyn.history_[-1]["step"] == 6


def test_quadratic_form_keeps_the_members_axis():
    rng = np.random.default_rng(0)
    g = torch.as_tensor(rng.normal(size=(3, 5, 2)))
    b = torch.as_tensor(rng.normal(size=(3, 5, 2)))
    A = torch.as_tensor(rng.normal(size=(3, 5, 2, 2)))
    c = torch.as_tensor(rng.normal(size=(3, 5)))
    loss = QuadraticFormLoss()
    together = loss(g, b, A, c)
    assert together.shape == (3,)
    for m in range(3):
        torch.testing.assert_close(together[m], loss(g[m], b[m], A[m], c[m]))


@pytest.fixture(scope="module")
def ensemble(pp_data, fitted_ae):
    X, F = pp_data
    Z = fitted_ae.transform(X)
    return PartialForceDynamics(n_members=3, max_epochs=3, random_state=0).fit(Z, F)


def test_ensemble_members_differ_and_predict_their_mean(pp_data, fitted_ae, ensemble):
    Z = np.asarray(fitted_ae.transform(pp_data[0][:40]))
    mean, std = ensemble.predict(Z, return_std=True)
    assert mean.shape == std.shape == (40, 4) and ensemble.n_members_ == 3
    with torch.no_grad():
        members = ensemble.member_vector_fields(torch.as_tensor(Z)).numpy()
    assert members.shape == (3, 40, 4)
    assert not np.allclose(members[0], members[1], rtol=1e-2)
    np.testing.assert_allclose(mean, members.mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(std, members.std(axis=0, ddof=1), rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(ensemble.predict(Z), mean)
    assert ensemble.best_epoch_.shape == (3,)


def test_a_single_model_has_no_spread(pp_data, fitted_ae):
    X, F = pp_data
    Z = fitted_ae.transform(X)
    dyn = PartialForceDynamics(n_members=1, max_epochs=2, random_state=0).fit(Z, F)
    mean, std = dyn.predict(Z, return_std=True)
    assert np.all(std == 0) and np.array_equal(mean, dyn.predict(Z))
    t = np.linspace(0, 1, 6)
    Z_mean, Z_std, members = simulate(
        dyn, np.asarray(Z[:2]), t, dt=0.05, return_std=True, return_members=True
    )
    assert members.shape == (1, 2, 6, 4) and np.all(Z_std == 0)
    np.testing.assert_array_equal(Z_mean, members[0])


def test_ensemble_rollouts_are_the_members_own(pp_data, fitted_ae, ensemble):
    Z0 = np.asarray(fitted_ae.transform(pp_data[0][:2]))
    t = np.linspace(0, 2, 5)
    mean, std, members = simulate(
        ensemble, Z0, t, dt=0.05, return_std=True, return_members=True
    )
    assert mean.shape == std.shape == (2, 5, 4) and members.shape == (3, 2, 5, 4)
    np.testing.assert_allclose(mean, members.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, members.std(axis=0, ddof=1), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(simulate(ensemble, Z0, t, dt=0.05), mean)
    assert np.all(std[:, 1:] > 0)
    # Member 1 alone: its trajectory is the integral of its own field.
    single = pickle.loads(pickle.dumps(ensemble))
    single.module_.field.members = single.module_.field.members[1:2]
    single.n_members_ = 1
    np.testing.assert_allclose(
        simulate(single, Z0, t, dt=0.05), members[1], rtol=1e-5, atol=1e-6
    )


def test_each_members_rollout_error_is_scored(system, pp_data, fitted_ae, ensemble):
    from skmacro.experiments.protocol import DynamicsRun, compare_losses, member_errors

    X, F = pp_data
    test = system.simulate(system.sample_initial(2, random_state=7), 2.0, 0.01)
    t = np.arange(test.shape[1]) * 0.01
    pipe = Pipeline([("ae", fitted_ae), ("dyn", ensemble)])
    error, Z_true, Z_pred, members = rollout_error(
        pipe, t, test, dt=0.01, return_members=True
    )
    assert members.shape == (3, *Z_pred.shape)
    np.testing.assert_allclose(Z_pred, members.mean(axis=0), rtol=1e-5, atol=1e-6)
    errors = member_errors(Z_true, members, 2)
    assert errors.shape == (3,) and len(set(errors)) == 3
    assert errors[1] == pytest.approx(
        mean_relative_error(Z_true[..., :2], members[1, ..., :2], squared=False)
    )
    with pytest.raises(ValueError, match="Z_members must have shape"):
        member_errors(Z_true, members[0], 2)
    # compare_losses keeps them beside the ensemble's error.
    run = DynamicsRun("p", "L_x,p", np.arange(len(X)), F)
    result = compare_losses(
        fitted_ae,
        X,
        [run],
        t,
        test,
        dt=0.01,
        defaults={"n_members": 2, "max_epochs": 2, "random_state": 0},
        keep_trajectories=True,
    )["p"]
    assert result.Z_members.shape == (2, *result.Z_pred.shape)
    np.testing.assert_array_equal(
        result.member_errors, member_errors(result.Z_true, result.Z_members, 2)
    )


def _two_member_rollouts(latent_model, pp_data, fitted_ae, **params):
    """A two-member ensemble of ``latent_model`` and each member's rollout of
    three training states over t in [0, 3]."""
    X, F = pp_data
    Z = fitted_ae.transform(X)
    dyn = PartialForceDynamics(
        latent_model=latent_model,
        latent_model__hidden=(16, 16),
        n_members=2,
        max_epochs=2,
        random_state=0,
        **params,
    ).fit(Z, F)
    t = np.linspace(0, 3, 61)
    _, members = simulate(dyn, np.asarray(Z[:3]), t, dt=0.01, return_members=True)
    return dyn, t, members


def test_onsager_members_dissipate_their_own_potential(pp_data, fitted_ae):
    dyn, t, members = _two_member_rollouts("onsager", pp_data, fitted_ae)
    scale = dyn.module_
    for m in range(2):
        z = torch.as_tensor(members[m]).reshape(-1, 4)
        with torch.no_grad():
            potential = dyn.module_.field.member(m).potential(
                (z - scale.z_mean) / scale.z_scale
            )
        V = potential.reshape(3, len(t)).numpy()
        assert np.all(np.diff(V, axis=1) <= 1e-6 * np.abs(V).max())
    # The other member's potential is not a Lyapunov function of this
    # member's rollout in general; the guarantee is per member.


def test_gfinn_members_conserve_their_own_energy(pp_data, fitted_ae):
    dyn, t, members = _two_member_rollouts(
        "gfinn", pp_data, fitted_ae, latent_model__bath=False
    )
    scale = dyn.module_
    assert not np.allclose(members[0], members[1])
    for m in range(2):
        gfinn = dyn.module_.field.member(m)
        z = (torch.as_tensor(members[m]).reshape(-1, 4) - scale.z_mean) / scale.z_scale
        with torch.no_grad():
            E = gfinn.energy(z).reshape(3, len(t)).numpy()
            S = gfinn.entropy(z).reshape(3, len(t)).numpy()
        zs = z.reshape(3, len(t), 4).numpy()
        assert np.all(np.linalg.norm(zs[:, -1] - zs[:, 0], axis=-1) > 1e-3)
        assert np.all(np.diff(S, axis=1) >= -1e-6 * np.abs(S).max())
        assert np.all(S[:, -1] > S[:, 0])
        drift = np.abs(E - E[:, :1]).max()
        # float32 rounding only: far below what S changed by.
        assert drift <= 1e-4 * np.abs(S[:, -1] - S[:, 0]).min(), drift
    # The other member's energy is not conserved along this member's
    # rollout in general; the guarantee is per member.


def test_gfinn_members_with_bath_lower_their_own_free_energy(pp_data, fitted_ae):
    dyn, t, members = _two_member_rollouts("gfinn", pp_data, fitted_ae)
    scale = dyn.module_
    assert not np.allclose(members[0], members[1])
    for m in range(2):
        gfinn = dyn.module_.field.member(m)
        assert gfinn.bath
        z = (torch.as_tensor(members[m]).reshape(-1, 4) - scale.z_mean) / scale.z_scale
        with torch.no_grad():
            F = gfinn.free_energy(z).reshape(3, len(t)).numpy()
        zs = z.reshape(3, len(t), 4).numpy()
        assert np.all(np.linalg.norm(zs[:, -1] - zs[:, 0], axis=-1) > 1e-3)
        assert np.all(np.diff(F, axis=1) <= 1e-6 * np.abs(F).max())
        assert np.all(F[:, -1] < F[:, 0])


def test_ensembles_clone_pickle_and_grid_search(pp_data, fitted_ae, ensemble):
    X, F = pp_data
    params = clone(ensemble).get_params()
    assert params["n_members"] == 3 and params["max_epochs"] == 3
    Z = fitted_ae.transform(X[:10])
    restored = pickle.loads(pickle.dumps(ensemble))
    np.testing.assert_array_equal(restored.predict(Z), ensemble.predict(Z))
    pipe = Pipeline([("ae", fitted_ae), ("dyn", PartialForceDynamics(max_epochs=1))])
    grid = GridSearchCV(pipe, {"dyn__n_members": [1, 2]}, cv=2).fit(X, F)
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))
    assert grid.best_estimator_[-1].n_members_ in (1, 2)


@pytest.mark.parametrize("bad", [0, -2, 1.5, "3"])
def test_bad_n_members_is_named(pp_data, fitted_ae, bad):
    X, F = pp_data
    with pytest.raises((ValueError, TypeError), match="n_members"):
        PartialForceDynamics(n_members=bad, max_epochs=1).fit(fitted_ae.transform(X), F)


def test_warm_start_keeps_the_number_of_members(pp_data, fitted_ae):
    X, F = pp_data
    Z = fitted_ae.transform(X)
    dyn = PartialForceDynamics(n_members=2, max_epochs=1, warm_start=True).fit(Z, F)
    dyn.set_params(n_members=3)
    with pytest.raises(ValueError, match="n_members=3 but the model was fitted"):
        dyn.fit(Z, F)


def test_continued_training_follows_the_current_settings(system, pp_data, fitted_ae):
    """A warm-started or partial fit starts a fresh schedule from the current
    ``lr`` and uses the current criterion and callbacks, as a new fit would."""
    from skmacro import ClosureAutoencoder

    X, F = pp_data
    ae = ClosureAutoencoder(
        observables=system.observables,
        n_components=4,
        max_epochs=2,
        validation_fraction=None,
        random_state=0,
    ).fit(X)
    ae.set_params(lr=1e-4, lambda_cond=0.5, patience=1, warm_start=True)
    ae.fit(X)
    # The scheduler steps after each epoch: the first epoch of the warm fit
    # ran at the new lr, the last ended the cosine at its floor.
    first = ae.optimizer_.param_groups[0]
    assert first["initial_lr"] == pytest.approx(1e-4)
    assert first["lr"] == pytest.approx(1e-6)
    assert ae.criterion_.lambda_cond == 0.5
    assert "early_stopping" in dict(ae.callbacks_)

    Z = fitted_ae.transform(X)
    dyn = PartialForceDynamics(max_epochs=1, random_state=0).fit(Z, F)
    dyn.set_params(lr=1e-4)
    dyn.partial_fit(Z, F)
    assert dyn.history[-1]["lr"] == pytest.approx(1e-6)  # floor of the new rate
    # The latent model's parameters may change on a fitted model, for the
    # next fit (skorch would try to re-initialise a component of that name).
    dyn.set_params(latent_model__hidden=(8,))
    dyn.fit(Z, F)
    assert dyn.module_.field.member(0).net[0].out_features == 8


def test_a_diverged_member_makes_the_rollout_error_infinite(pp_data, fitted_ae):
    X, F = pp_data
    Z = fitted_ae.transform(X)
    dyn = PartialForceDynamics(n_members=2, max_epochs=1, random_state=0).fit(Z, F)
    with torch.no_grad():
        # Member 0 stands still; member 1 drives z far beyond the data.
        for m, push in ((0, 0.0), (1, 50.0)):
            last = dyn.module_.field.member(m).net[-1]
            last.weight.mul_(0)
            last.bias.fill_(push)
    pipe = Pipeline([("ae", fitted_ae), ("dyn", dyn)])
    test = X[:606].reshape(6, 101, -1)[:2, ::10]  # any states will do
    t = np.linspace(0, 100, 11)
    error, _, Z_pred, Z_members = rollout_error(
        pipe, t, test, dt=0.1, return_members=True
    )
    assert error == np.inf
    assert np.all(np.isfinite(Z_members[0]))  # member 0 alone stays finite
    assert np.isnan(Z_pred[:, -1]).all() and np.isfinite(Z_pred[:, 0]).all()


def test_plot_observables_shades_the_band():
    import matplotlib

    matplotlib.use("Agg")
    from skmacro.plotting import plot_observables

    t = np.linspace(0, 1, 11)
    z = np.stack([np.sin(t), np.cos(t)], axis=1)
    axes = plot_observables(t, z, z + 0.01, z_std=np.full_like(z, 0.02))
    assert len(axes) == 2 and all(len(ax.collections) == 1 for ax in axes)
    band = axes[0].collections[0].get_paths()[0].vertices[:, 1]
    assert band.max() == pytest.approx(z[:, 0].max() + 0.01 + 0.04)
    with pytest.raises(ValueError, match="give z_pred"):
        plot_observables(t, z, z_std=z)
    # simulate's batch (n, T, k) is not one trajectory: say which to pass.
    with pytest.raises(ValueError, match=r"z_true must be one trajectory.*z_true\[i\]"):
        plot_observables(t, z[None], z[None])
    with pytest.raises(ValueError, match="one time per row"):
        plot_observables(t[:-1], z)
    with pytest.raises(ValueError, match="z_pred must have one column per"):
        plot_observables(t, z, z[:, :1])
    with pytest.raises(ValueError, match="names must have one entry"):
        plot_observables(t, z, names=["T"])


def test_latent_noise_perturbs_training_inputs_only(linear_data):
    """The noise is added to ``z`` in units of each coordinate's spread; the
    statistics of the loss are left as they are."""
    Z, F = linear_data
    dyn = PartialForceDynamics(latent_noise=0.1, max_epochs=1, random_state=0)
    dyn.fit(Z, F)
    z = torch.zeros(2, 20000, 2)
    batch = {"z": z, "b": torch.ones(2, 20000, 2)}
    noisy = dyn._training_batch(batch, torch.Generator().manual_seed(0))
    assert noisy["b"] is batch["b"] and torch.equal(batch["z"], z)
    spread = noisy["z"].reshape(-1, 2).std(dim=0).numpy()
    np.testing.assert_allclose(spread, 0.1 * dyn.latent_scale_, rtol=0.03)
    clean = dyn.set_params(latent_noise=0.0)._training_batch(batch, None)
    assert clean is batch


def test_latent_noise_keeps_a_linear_field(linear_data):
    """Noise on the inputs of a linear target leaves its optimum unchanged:
    the field is still recovered (within 5%), and the fit differs from the
    noiseless one."""
    Z, F = linear_data
    noisy = PartialForceDynamics(latent_noise=0.1, random_state=0).fit(Z, F)
    exact = np.asarray(Z) @ ROTATION.T
    error = np.abs(noisy.predict(Z) - exact).max()
    assert error < 0.05 * np.abs(exact).max()
    clean = PartialForceDynamics(random_state=0).fit(Z, F)
    assert not np.allclose(noisy.predict(Z), clean.predict(Z))


@pytest.mark.parametrize("bad", [-0.1, "0.1"])
def test_bad_latent_noise_is_named(linear_data, bad):
    Z, F = linear_data
    with pytest.raises((ValueError, TypeError), match="latent_noise"):
        PartialForceDynamics(latent_noise=bad, max_epochs=1).fit(Z, F)
