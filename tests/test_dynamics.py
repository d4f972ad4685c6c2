import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.pipeline import Pipeline

from skmacro import ClosureAutoencoder, PartialForceDynamics, simulate
from skmacro.forces import PartialForces
from skmacro.nn import QuadraticFormLoss
from skmacro.sampling import sample_partial_forces
from skmacro.statistics import partial_force_statistics


def _direct_partial_loss(J, f_full, mask, p, g):
    """Eq. 12 written out: (1/p) mean_k sum_{i in I} ||f_i - P_i g||^2."""
    total = 0.0
    for k in range(len(J)):
        P = J[k].T @ np.linalg.inv(J[k] @ J[k].T)
        residual = f_full[k] - P @ g[k]
        total += np.sum(residual[mask[k]] ** 2) / p
    return total / len(J)


def _quadratic_loss(stats, g):
    loss = QuadraticFormLoss()(torch.as_tensor(g), stats["b"], stats["A"], stats["c"])
    return float(loss)


def test_quadratic_form_equals_eq12(system, pp_data, fitted_ae):
    X, F = pp_data
    X, F = X[:40], F[:40]
    stats = partial_force_statistics(
        fitted_ae, X.astype(np.float32), PartialForces(F, 100), "partial"
    )
    J = fitted_ae.jacobian(X).astype(np.float64)
    g = np.random.default_rng(0).normal(size=(40, 4))
    direct = _direct_partial_loss(J, np.nan_to_num(F), ~np.isnan(F), 0.2, g)
    assert _quadratic_loss(stats, g) == pytest.approx(direct, rel=1e-6)


def test_z_loss_with_complete_forces(system, pp_data, fitted_ae):
    X = pp_data[0][:30]
    F = system.forces(X)
    stats = partial_force_statistics(fitted_ae, X, PartialForces(F, 100), "z")
    J = fitted_ae.jacobian(X).astype(np.float64)
    g = np.random.default_rng(1).normal(size=(30, 4))
    target = np.einsum("kdn,kn->kd", J, F)
    direct = np.mean(np.sum((target - g) ** 2, axis=1))
    assert _quadratic_loss(stats, g) == pytest.approx(direct, rel=1e-6)


def test_partial_loss_is_unbiased_for_x_loss(system, pp_data, fitted_ae):
    """Eq. 13: the mean of L_x,p over masks is L_x (Monte Carlo)."""
    X = np.repeat(pp_data[0][:3], 2000, axis=0)
    F_full = system.forces(X)
    g = np.repeat(np.random.default_rng(2).normal(size=(3, 4)), 2000, axis=0)
    full = partial_force_statistics(
        fitted_ae, X[::2000], PartialForces(F_full[::2000], 100), "x"
    )
    l_x = _quadratic_loss(full, g[::2000])
    F = sample_partial_forces(system, X, p=0.25, random_state=3)
    stats = partial_force_statistics(fitted_ae, X, PartialForces(F, 100), "partial")
    per_config = (
        stats["c"]
        - 2 * torch.sum(torch.as_tensor(g) * stats["b"], -1)
        + torch.einsum(
            "bi,bij,bj->b", torch.as_tensor(g), stats["A"], torch.as_tensor(g)
        )
    ).numpy()
    sem = per_config.std() / np.sqrt(len(per_config))
    assert abs(per_config.mean() - l_x) < 5 * sem
    assert sem < 0.05 * l_x


def test_sparse_dense_and_mask_agree(system, pp_data, fitted_ae):
    X = pp_data[0][:50]
    F_dense, mask = sample_partial_forces(
        system, X, 0.2, random_state=4, return_mask=True
    )
    F_sparse = sample_partial_forces(system, X, 0.2, random_state=4, format="sparse")
    F_zeros = np.nan_to_num(F_dense)
    # Each force split into two stored halves: SciPy reads their sum.
    halves = sp.csr_array(
        (
            np.repeat(F_sparse.data / 2, 2),
            np.repeat(F_sparse.indices, 2),
            2 * F_sparse.indptr,
        ),
        shape=F_sparse.shape,
    )
    forms = [
        PartialForces(F_dense, 100),
        PartialForces(F_sparse, 100),
        PartialForces(sp.csr_matrix(F_sparse), 100),
        PartialForces(F_zeros, 100, mask=mask),
        PartialForces(F_dense, 100, inclusion_proba=np.full(100, 0.2)),
        PartialForces(halves, 100),
        PartialForces(pd.DataFrame(F_dense), 100),
    ]
    assert forms[-2].p == forms[0].p
    reference = partial_force_statistics(fitted_ae, X, forms[0])
    for forces in forms[1:]:
        stats = partial_force_statistics(fitted_ae, X, forces)
        for key in ("b", "A", "c"):
            np.testing.assert_allclose(stats[key], reference[key], rtol=1e-12)


def test_computed_csr_holds_the_computed_entries(system, pp_data):
    """Every form of partial forces gives the same CSR of computed entries,
    a computed force of exactly 0 included, for any row selection."""
    X = pp_data[0][:30]
    F_dense, mask = sample_partial_forces(
        system, X, 0.2, random_state=5, return_mask=True
    )
    F_dense[tuple(np.argwhere(mask)[0])] = 0.0
    F_sparse = sp.csr_array((F_dense[mask], np.nonzero(mask)), shape=F_dense.shape)
    rows = np.array([2, 5, 29])
    for forces in (
        PartialForces(F_dense, 100),
        PartialForces(F_sparse, 100),
        PartialForces(np.nan_to_num(F_dense), 100, mask=mask),
    ):
        for selection, expected_rows in ((None, slice(None)), (rows, rows)):
            csr = forces.computed_csr(selection)
            stored = np.zeros(csr.shape, bool)
            row = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
            stored[row, csr.indices] = True
            assert csr.nnz == stored.sum()
            np.testing.assert_array_equal(stored, mask[expected_rows])
            np.testing.assert_array_equal(
                csr.toarray()[stored], F_dense[expected_rows][mask[expected_rows]]
            )


def test_rows_with_unequal_force_counts(system, pp_data, fitted_ae):
    """Rows computed on different numbers of coordinates (one on none) give
    the statistics of Eq. 12 written out with dense Jacobians."""
    X = pp_data[0][:4]
    F = system.forces(X)
    F[0, 10:] = np.nan
    F[1, :] = np.nan
    F[2, ::3] = np.nan
    forces = PartialForces(F, 100, p=0.5)
    index, f, w = forces.observed_chunk(slice(0, 4))
    assert index.shape == (4, 100)
    np.testing.assert_array_equal((w > 0).sum(1), [10, 0, 66, 100])
    np.testing.assert_array_equal(f[w == 0], 0)
    stats = partial_force_statistics(fitted_ae, X, forces, "partial")
    J = fitted_ae.jacobian(X).astype(np.float64)
    g = np.random.default_rng(5).normal(size=(4, 4))
    direct = _direct_partial_loss(J, np.nan_to_num(F), ~np.isnan(F), 0.5, g)
    assert _quadratic_loss(stats, g) == pytest.approx(direct, rel=1e-6)


def test_inferred_p_is_algorithm_1_fraction(system, pp_data):
    X = pp_data[0][:20]
    F = sample_partial_forces(system, X, 0.25, random_state=0)
    assert PartialForces(F, 100).p == 0.25


def test_pipeline_round_trip(pp_data, make_pipe):
    X, F = pp_data
    pipe = make_pipe(ae_epochs=3, dyn_epochs=5).fit(X, F)
    dzdt = pipe.predict(X[:7])
    assert dzdt.shape == (7, 4) and np.all(np.isfinite(dzdt))
    score = pipe.score(X, F)
    assert np.isfinite(score) and score <= 1
    Z = simulate(pipe, X[:3], t=np.linspace(0, 1, 11), dt=0.01)
    assert Z.shape == (3, 11, 4)
    np.testing.assert_allclose(Z[:, 0], pipe[0].transform(X[:3]), rtol=1e-6)
    hist = pipe[-1].history_
    assert {"train_loss", "valid_loss", "dur"} <= set(hist[-1])


def test_training_reduces_loss_and_learns_observable_velocity(system, pp_data):
    X, F = pp_data
    ae = ClosureAutoencoder(
        observables=system.observables, n_components=4, max_epochs=20, random_state=0
    )
    Z = ae.fit_transform(X)
    dyn = PartialForceDynamics(max_epochs=60, random_state=0).fit(Z, F)
    losses = dyn.history_[:, "train_loss"]
    assert losses[-1] < 0.5 * losses[0]
    # Against the exact velocity of the observables, not the noisy estimate.
    true = np.stack(
        [system.forces(X)[:, :50].mean(1), system.forces(X)[:, 50:].mean(1)], 1
    )
    pred = dyn.predict(Z)[:, :2]
    assert np.mean((pred - true) ** 2) < 0.1 * np.var(true, axis=0).sum()


def test_dynamics_input_errors(system, pp_data, fitted_ae):
    X, F = pp_data
    Z = fitted_ae.transform(X)
    with pytest.raises(ValueError, match="carries no encoder"):
        PartialForceDynamics(max_epochs=1).fit(np.asarray(Z), F)
    with pytest.raises(ValueError, match="same configurations"):
        PartialForceDynamics(max_epochs=1).fit(Z, F[:-1])
    with pytest.raises(ValueError, match="shape"):
        PartialForceDynamics(max_epochs=1).fit(Z, F[:, :-1])
    with pytest.raises(ValueError, match="did you mean 'partial'"):
        PartialForceDynamics(loss="partal", max_epochs=1).fit(Z, F)
    with pytest.raises(ValueError, match="did you mean 'onsager'"):
        PartialForceDynamics(latent_model="onsagr", max_epochs=1).fit(Z, F)
    with pytest.raises(ValueError, match=r"'p' parameter.*range \(0.0, 1.0\]"):
        PartialForceDynamics(p=1.5, max_epochs=1).fit(Z, F)
    with pytest.raises(ValueError, match="needs the forces on every coordinate"):
        PartialForceDynamics(loss="x", max_epochs=1).fit(Z, F)
    F_inf = F.copy()
    F_inf[0, np.flatnonzero(~np.isnan(F[0]))[0]] = np.inf
    with pytest.raises(ValueError, match="inf"):
        PartialForceDynamics(max_epochs=1).fit(Z, F_inf)
    with pytest.raises(ValueError, match="max_epochs"):
        PartialForceDynamics(max_epochs=0).fit(Z, F)
    with pytest.raises(TypeError, match="F, the partial forces.*got None"):
        PartialForceDynamics(max_epochs=1).fit(Z, None)  # a Pipeline without F
    with pytest.raises(ValueError, match="F has no computed force"):
        PartialForceDynamics(max_epochs=1).fit(Z, np.full_like(F, np.nan))
    with pytest.raises(ValueError, match="F has no computed force"):
        PartialForceDynamics(p=0.2, max_epochs=1).fit(Z, sp.csr_array(F.shape))


def test_inputs_not_modified(system, pp_data):
    X, F = pp_data
    X0, F0 = X.copy(), F.copy()
    pipe = Pipeline(
        [
            ("ae", ClosureAutoencoder(observables=system.observables, max_epochs=1)),
            ("dyn", PartialForceDynamics(max_epochs=1)),
        ]
    ).fit(X, F)
    pipe.score(X, F)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(F, F0)


def test_divergence_keeps_best_parameters(system, pp_data, fitted_ae):
    X, F = pp_data
    Z = fitted_ae.transform(X)
    dyn = PartialForceDynamics(lr=1e30, max_epochs=30, random_state=0)
    with pytest.warns(UserWarning, match="non-finite"):
        dyn.fit(Z, F)
    assert dyn.history_[-1]["epoch"] < 30
    assert np.all(np.isfinite(dyn.predict(Z)))
    # An ensemble stops too, and every member keeps finite parameters.
    dyn.set_params(n_members=2)
    with pytest.warns(UserWarning, match="each member's best parameters"):
        dyn.fit(Z, F)
    assert np.all(np.isfinite(dyn.predict(Z, return_std=True)))


class _FixedControl:
    """A control variate that ignores the mask of the configuration."""

    def __init__(self, h):
        self.h = h

    def chunk(self, rows):
        return self.h[rows]


def test_control_variate_keeps_the_expectation_and_cuts_variance(
    system, pp_data, fitted_ae
):
    x = pp_data[0][:1]
    X = np.repeat(x, 4000, axis=0)
    f = system.forces(x)
    F = sample_partial_forces(system, X, p=0.2, random_state=5)
    forces = PartialForces(F, 100)
    full = partial_force_statistics(fitted_ae, x, PartialForces(f, 100), "x")
    plain = partial_force_statistics(fitted_ae, X, forces)
    rng = np.random.default_rng(6)
    h = np.repeat(f + 0.1 * np.abs(f).mean() * rng.normal(size=f.shape), 4000, axis=0)
    centred = partial_force_statistics(fitted_ae, X, forces, control=_FixedControl(h))
    for stats in (plain, centred):
        b = stats["b"].numpy()
        sem = b.std(axis=0) / np.sqrt(len(b))
        assert np.all(np.abs(b.mean(axis=0) - full["b"][0].numpy()) < 5 * sem + 1e-9)
        A = stats["A"].mean(dim=0).numpy()
        np.testing.assert_allclose(
            A, full["A"][0].numpy(), rtol=0.05, atol=1e-3 * np.abs(A).max()
        )
    # The loss gradient at the exact velocity g = J f is pure noise: 2 (A g - b).
    g = full["y"][0]

    def gradient_noise(stats):
        return (torch.einsum("bij,j->bi", stats["A"], g) - stats["b"]).std(dim=0)

    assert bool(torch.all(gradient_noise(centred) < 0.5 * gradient_noise(plain)))


def test_neighbour_control_variate_never_uses_own_forces(system, pp_data):
    from skmacro.statistics import NeighbourForceMeans

    X, F = pp_data
    control = NeighbourForceMeans(
        X, PartialForces(F, 100), n_neighbors=10, random_state=0
    )
    h = control.chunk(slice(0, 5))
    assert h.shape == (5, 100) and np.all(np.isfinite(h))
    # Row 0's own forces do not enter its guess.
    F_changed = F.copy()
    F_changed[0] = np.where(np.isnan(F[0]), np.nan, 1e6)
    changed = NeighbourForceMeans(
        X, PartialForces(F_changed, 100), n_neighbors=10, random_state=0
    )
    np.testing.assert_array_equal(changed.chunk(slice(0, 1)), h[:1])
    # A guess from the neighbours is close to the true forces.
    f = system.forces(X[:5])
    assert np.sqrt(np.mean((h - f) ** 2)) < 0.5 * np.sqrt(np.mean(f**2))


def test_neighbour_control_variate_is_the_mean_of_computed_forces(pp_data):
    from skmacro.statistics import NeighbourForceMeans

    X, F = pp_data
    X, F = X[:30], F[:30].copy()
    # A computed force of exactly 0 still counts as computed.
    column = np.flatnonzero(~np.isnan(F[3]))[0]
    F[3, column] = 0.0
    control = NeighbourForceMeans(X, PartialForces(F, 100), n_neighbors=29)
    h = control.chunk(slice(0, 1))[0]
    # Every other row is a neighbour: the guess is their mean where computed.
    others = F[1:]
    counts = np.sum(~np.isnan(others), axis=0)
    expected = np.where(
        counts > 0, np.nansum(others, axis=0) / np.maximum(counts, 1), 0
    )
    np.testing.assert_allclose(h, expected, rtol=1e-6, atol=1e-6 * np.nanmax(np.abs(F)))


@pytest.mark.parametrize("latent_model", ["mlp", "onsager", "gfinn"])
@pytest.mark.parametrize("loss", ["partial", "z"])
def test_every_latent_model_fits_through_the_pipeline(
    pp_data, make_pipe, latent_model, loss
):
    X, F = pp_data
    pipe = make_pipe(
        ae_epochs=1,
        dyn_epochs=2,
        latent_model=latent_model,
        loss=loss,
        module__hidden=(16, 16),
    ).fit(X, F)
    assert np.all(np.isfinite(pipe.predict(X[:5])))
    assert np.isfinite(pipe.score(X, F))
    Z = simulate(pipe, X[:2], np.linspace(0, 1, 3), dt=0.05)
    assert Z.shape == (2, 3, 4) and np.all(np.isfinite(Z))


def test_latent_model_hyperparameters_are_grid_searchable(system, pp_data, fitted_ae):
    from sklearn.model_selection import GridSearchCV

    X, F = pp_data
    pipe = Pipeline([("ae", fitted_ae), ("dyn", PartialForceDynamics(max_epochs=1))])
    grid = GridSearchCV(
        pipe,
        {"dyn__latent_model": ["onsager"], "dyn__module__hidden": [(8,), (16,)]},
        cv=2,
    ).fit(X, F)
    assert grid.best_estimator_[-1].module_.field.member(0).n_components == 4


def test_simulate_divergence_raises_or_masks(system, pp_data, fitted_ae):
    from skmacro import RolloutDivergenceError

    X, F = pp_data
    Z = fitted_ae.transform(X)
    dyn = PartialForceDynamics(n_members=1, max_epochs=1, random_state=0).fit(Z, F)
    with torch.no_grad():  # a field that drives z far beyond the training data
        last = dyn.module_.field.member(0).net[-1]
        last.weight.mul_(0)
        last.bias.fill_(50.0)
    Z0 = np.asarray(Z[:3])
    with pytest.raises(RolloutDivergenceError, match=r"diverged after t = "):
        simulate(dyn, Z0, np.linspace(0, 100, 11), dt=0.1)
    out = simulate(dyn, Z0, np.linspace(0, 100, 11), dt=0.1, on_divergence="mask")
    assert np.all(np.isfinite(out[:, 0])) and np.all(np.isnan(out[:, -1]))


def test_keep_members_copies_the_chosen_fields(system, pp_data, fitted_ae):
    X, F = pp_data
    Z = fitted_ae.transform(X)
    dyn = PartialForceDynamics(n_members=4, max_epochs=3, random_state=0).fit(Z, F)
    before = dyn.predict(Z)
    z = torch.as_tensor(np.asarray(Z[:20]))
    with torch.no_grad():
        fields = dyn.member_vector_fields(z).numpy()
    kept = dyn.keep_members([2, 0])
    assert kept.n_members == kept.n_members_ == 2
    np.testing.assert_array_equal(kept.best_epoch_, dyn.best_epoch_[[2, 0]])
    with torch.no_grad():
        np.testing.assert_allclose(kept.member_vector_fields(z).numpy(), fields[[2, 0]])
    np.testing.assert_allclose(
        kept.predict(Z[:20]), fields[[2, 0]].mean(axis=0), rtol=1e-5
    )
    # The ensemble itself is left as it was, and the copy trains on its own.
    assert dyn.n_members_ == 4
    np.testing.assert_array_equal(dyn.predict(Z), before)
    kept.partial_fit(Z, F)
    np.testing.assert_array_equal(dyn.predict(Z), before)
    assert kept.keep_members([1]).n_members_ == 1
    for bad in ([4], [], [1, 1], [0.5], [[0, 1]]):
        with pytest.raises(ValueError, match="members must be"):
            dyn.keep_members(bad)
