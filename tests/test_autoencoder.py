import numpy as np
import pytest
import torch

from skmacro import ClosureAutoencoder, ConditioningWarning, LatentArray


def test_observables_occupy_first_columns_exactly(system, pp_data, fitted_ae):
    X = pp_data[0]
    Z = fitted_ae.transform(X)
    expected = system.observables(torch.as_tensor(X.astype(np.float32))).numpy()
    np.testing.assert_array_equal(Z[:, :2], expected)
    assert Z.shape == (len(X), 4)


def test_observables_untouched_by_training(system, pp_data):
    X = pp_data[0]
    ae = ClosureAutoencoder(
        observables=system.observables, n_components=3, max_epochs=2, random_state=0
    ).fit(X)
    assert not any(p is None for p in ae.module_.parameters())
    Z = ae.transform(X)
    np.testing.assert_allclose(Z[:, 0], X[:, :50].mean(1), rtol=1e-5)


def test_jacobian_matches_finite_differences(fitted_ae, pp_data):
    x = pp_data[0][:2].astype(np.float64)
    J = fitted_ae.jacobian(x)
    assert J.shape == (2, 4, 100)
    eps = 1e-2
    e = np.zeros(100)
    e[7] = eps
    fd = (fitted_ae.transform(x + e) - fitted_ae.transform(x - e)) / (2 * eps)
    np.testing.assert_allclose(J[:, :, 7], fd, atol=1e-3)
    # The observables' rows are 1/50 on their own half.
    np.testing.assert_allclose(J[:, 0, :50], 1 / 50, rtol=1e-6)
    np.testing.assert_allclose(J[:, 0, 50:], 0, atol=1e-12)


@pytest.mark.parametrize(
    "n_observables, n_components, hidden",
    [(2, 4, (16, 8)), (0, 3, (16,)), (2, 2, (16,)), (2, 5, ())],
)
def test_factored_jacobian_matches_autograd(
    system, n_observables, n_components, hidden
):
    from skmacro.nn import ClosureAutoencoderModule, MLPClosure

    torch.manual_seed(0)
    closure = MLPClosure(hidden).build(system.n_features, n_components - n_observables)
    closure.x_scale.uniform_(0.5, 2.0)
    module = ClosureAutoencoderModule(
        system.observables if n_observables else None,
        n_observables=n_observables,
        closure=closure,
        decoder_hidden=hidden[::-1],
        activation="softplus",
    )
    x = torch.rand(7, system.n_features, dtype=torch.float64)
    module.double()
    J = torch.cat(
        [torch.autograd.functional.jacobian(module.encode, r[None])[:, :, 0] for r in x]
    )
    assert J.shape == (7, n_components, system.n_features)
    jacobian = module.jacobian(x)
    torch.testing.assert_close(jacobian.dense(), J)
    torch.testing.assert_close(jacobian.gram(), J @ J.transpose(1, 2))
    v = torch.randn(7, system.n_features, dtype=torch.float64)
    torch.testing.assert_close(jacobian.matvec(v), torch.einsum("bdn,bn->bd", J, v))
    index = torch.randint(system.n_features, (7, 5))
    expected = torch.gather(J, 2, index[:, None, :].expand(-1, n_components, -1))
    torch.testing.assert_close(jacobian.columns(index), expected)


def test_inverse_transform_and_reconstruction_improves(system, pp_data):
    X = pp_data[0]
    ae = ClosureAutoencoder(
        observables=system.observables, n_components=4, max_epochs=15, random_state=0
    ).fit(X)
    X_hat = ae.inverse_transform(ae.transform(X))
    assert X_hat.shape == X.shape
    losses = ae.history_[:, "train_loss"]
    assert losses[-1] < losses[0]


def test_latent_array_keeps_link_on_row_selection(fitted_ae, pp_data):
    X = pp_data[0]
    Z = fitted_ae.transform(X)
    assert isinstance(Z, LatentArray) and Z.encoder is fitted_ae
    sub = Z[5:9]
    assert sub.encoder is fitted_ae
    np.testing.assert_array_equal(sub.source, X[5:9])
    assert getattr(Z[:, :2], "encoder", None) is None
    assert getattr(Z + 1, "encoder", None) is None


def test_condition_loss_lowers_condition_number(system, pp_data):
    from skmacro.nn.autoencoder import condition_number

    X = pp_data[0]
    kappas = {}
    for lam in (0.0, 1e-2):
        ae = ClosureAutoencoder(
            observables=system.observables,
            n_components=4,
            lambda_cond=lam,
            max_epochs=15,
            random_state=0,
        ).fit(X)
        # Measured on evenly spaced training rows.
        rows = np.sort(ae.train_rows_)
        sample = X[rows[np.linspace(0, len(rows) - 1, 256).astype(int)]]
        J = torch.as_tensor(ae.jacobian(sample))
        kappas[lam] = float(condition_number(J @ J.transpose(1, 2)).median())
        assert ae.condition_number_ == pytest.approx(kappas[lam], rel=1e-3)
    assert kappas[1e-2] < kappas[0.0]


def test_badly_scaled_observables_warn(system, pp_data):
    import warnings

    from skmacro import ConditioningWarning

    X = pp_data[0][:500]
    params = dict(n_components=4, max_epochs=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConditioningWarning)
        ClosureAutoencoder(observables=system.observables, **params).fit(X)
    # Observables in units 100x smaller: their gradient rows shrink and
    # kappa grows 1e4-fold (lambda_cond = 0 leaves the geometry to training).
    tiny = ClosureAutoencoder(
        observables=lambda x: 1e-2 * system.observables(x), lambda_cond=0.0
    )
    with pytest.warns(ConditioningWarning, match="lambda_cond"):
        tiny.set_params(**params).fit(X)
    assert tiny.condition_number_ > 1e3


def test_condition_number_resolves_a_rank_deficient_closure(system, pp_data):
    """A closure with two identical outputs has a singular J J^T; the
    reported kappa must say so (float32 eigenvalues stop near 1e7), and the
    warning must point to the cause rather than to lambda_cond."""
    from skmacro import ConditioningWarning

    X = pp_data[0][:300]
    ae = ClosureAutoencoder(
        observables=system.observables,
        n_components=4,
        max_epochs=1,
        lr=1e-12,
        warm_start=True,
        random_state=0,
    ).fit(X)
    assert ae.condition_number_ < 1e4
    last = ae.module_.closure.net[-1]
    with torch.no_grad():
        last.weight[1] = last.weight[0]
        last.bias[1] = last.bias[0]
    with pytest.warns(ConditioningWarning, match="rank-deficient") as record:
        ae.fit(X)
    assert ae.condition_number_ > 1e12
    (warning,) = [w for w in record if w.category is ConditioningWarning]
    assert "a smaller base_fan_in (e.g. 25)" in str(warning.message)


def test_dependent_observables_without_closure_are_named(pp_data):
    """With no closure (d = d*), a singular J J^T can only come from the
    observables themselves, and the warning says so."""
    from skmacro import ConditioningWarning

    def dependent(x):
        return torch.stack([x[:, 0], 2 * x[:, 0]], dim=1)

    ae = ClosureAutoencoder(
        observables=dependent, n_components=2, lambda_cond=0.0, max_epochs=1
    )
    with pytest.warns(ConditioningWarning, match="observables' gradients"):
        ae.fit(pp_data[0][:200])


def test_autoencoder_input_errors(system, pp_data):
    X = pp_data[0]
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ClosureAutoencoder(observables=system.observables, max_epochs=1).fit(bad)
    with pytest.raises(ValueError, match="n_components"):
        ClosureAutoencoder(
            observables=system.observables, n_components=1, max_epochs=1
        ).fit(X)
    with pytest.raises(TypeError, match="observables.* must be a callable"):
        ClosureAutoencoder(observables="temperature", max_epochs=1).fit(X)
    ae = ClosureAutoencoder(observables=system.observables, max_epochs=1).fit(X)
    with pytest.raises(ValueError, match="features"):
        ae.transform(X[:, :-1])


def test_condition_number_of_non_finite_gram_is_nan():
    from skmacro.nn.autoencoder import condition_number

    G = torch.eye(3).repeat(2, 1, 1)
    G[1, 0, 0] = torch.nan
    kappa = condition_number(G)
    assert kappa[0] == 1.0 and torch.isnan(kappa[1])


def test_optimizer_fused_by_default_unless_set(system, pp_data):
    X = pp_data[0][:300]
    params = dict(observables=system.observables, max_epochs=1, random_state=0)
    ae = ClosureAutoencoder(**params).fit(X)
    assert ae.optimizer_.defaults["fused"] is True
    ae = ClosureAutoencoder(**params, optimizer__fused=False).fit(X)
    assert not ae.optimizer_.defaults["fused"]
    # An optimizer without a fused implementation gets no such argument.
    ae = ClosureAutoencoder(**params, optimizer=torch.optim.RMSprop).fit(X)
    assert "fused" not in ae.optimizer_.defaults


def test_adam_gets_the_reference_settings_unless_given(system, pp_data):
    X = pp_data[0][:300]
    params = dict(observables=system.observables, max_epochs=1, random_state=0)
    ae = ClosureAutoencoder(**params).fit(X)
    assert ae.optimizer_.defaults["betas"] == (0.9, 0.95)
    assert ae.optimizer_.defaults["weight_decay"] == 1e-4
    ae = ClosureAutoencoder(
        **params, optimizer__betas=(0.9, 0.999), optimizer__weight_decay=0.0
    ).fit(X)
    assert ae.optimizer_.defaults["betas"] == (0.9, 0.999)
    assert ae.optimizer_.defaults["weight_decay"] == 0.0
    # Other optimizers keep their own defaults (RMSprop has no betas).
    ae = ClosureAutoencoder(**params, optimizer=torch.optim.RMSprop).fit(X)
    assert ae.optimizer_.defaults["weight_decay"] == 0


def test_learning_rate_schedule_scales_each_parameter_group(system, pp_data):
    """The cosine schedule ends every group at 1e-2 of its own rate: a group
    given a rate below the floor of the default one is never raised."""
    X = pp_data[0][:300]
    ae = ClosureAutoencoder(
        observables=system.observables,
        lr=1e-3,
        max_epochs=4,
        random_state=0,
        optimizer__param_groups=[("closure.net.0.weight", {"lr": 1e-6})],
    ).fit(X)
    rates = sorted((g["initial_lr"], g["lr"]) for g in ae.optimizer_.param_groups)
    assert np.allclose(rates, [(1e-6, 1e-8), (1e-3, 1e-5)], rtol=1e-9, atol=0)


def test_wide_inputs_get_a_fan_in_scaled_first_layer_rate(system, pp_data):
    """Beyond base_fan_in inputs the closure's first-layer weight alone
    learns at lr * base_fan_in / n_features; a rate the user gives it wins."""
    X = pp_data[0][:300]
    n_features = X.shape[1]

    def groups(**params):
        ae = ClosureAutoencoder(
            observables=system.observables, lr=1e-3, max_epochs=1, random_state=0
        )
        ae.set_params(**params).fit(X)
        weight = ae.module_.closure.net[0].weight
        return sorted(
            (g["initial_lr"], any(p is weight for p in g["params"]), len(g["params"]))
            for g in ae.optimizer_.param_groups
        )

    n_params = 12  # weight and bias of three linear layers, closure and decoder
    assert groups() == [(1e-3, True, n_params)]  # default 8192 > n_features
    assert groups(base_fan_in=None) == [(1e-3, True, n_params)]
    scaled = 1e-3 * 25 / n_features
    assert groups(base_fan_in=25) == [(scaled, True, 1), (1e-3, False, n_params - 1)]
    own = [("closure.net.0.weight", {"lr": 1e-6})]
    assert groups(base_fan_in=25, optimizer__param_groups=own) == [
        (1e-6, True, 1),
        (1e-3, False, n_params - 1),
    ]


@pytest.mark.parametrize("input_scaling", ["global", "feature"])
def test_input_scaling(pp_data, input_scaling):
    X = pp_data[0]
    X_stretched = X.copy()
    X_stretched[:, 0] *= 100.0  # one coordinate in other units

    def encode(data):
        ae = ClosureAutoencoder(
            n_components=2, input_scaling=input_scaling, max_epochs=2, random_state=0
        ).fit(data)
        # The scales come from the training rows only.
        train = data[ae.train_rows_]
        return ae.module_.closure.x_scale.numpy(), np.asarray(ae.transform(data)), train

    scale, Z, train = encode(X)
    _, Z_stretched, _ = encode(X_stretched)
    if input_scaling == "feature":
        np.testing.assert_allclose(scale, train.std(axis=0), rtol=1e-4)
        # Each feature in its own units: a change of unit is invisible.
        np.testing.assert_allclose(Z, Z_stretched, rtol=1e-4, atol=1e-5)
    else:
        # One scale keeps the features' relative magnitudes ...
        expected = np.sqrt(train.var(axis=0).mean())
        np.testing.assert_allclose(scale, expected, rtol=1e-4)
        # ... so a stretched coordinate weighs more.
        assert np.abs(Z - Z_stretched).max() > 1e-2


def fit_with_closure_pca(system, X, closure_pca, **params):
    # Every row trains, so that the principal directions are those of X.
    return ClosureAutoencoder(
        observables=system.observables,
        closure_pca=closure_pca,
        max_epochs=2,
        validation_fraction=None,
        random_state=0,
        **params,
    ).fit(X)


def test_closure_pca_projects_the_first_layer_on_principal_directions(system, pp_data):
    from sklearn.decomposition import PCA

    X = pp_data[0]  # fewer rows than the PCA sample: all of them are used
    plain, ae = (fit_with_closure_pca(system, X, k) for k in (None, 5))
    scale = np.sqrt(X.var(axis=0).mean())
    pca = PCA(5).fit((X - X.mean(axis=0)) / scale)
    assert ae.closure_explained_variance_ == pytest.approx(
        pca.explained_variance_ratio_.sum(), rel=1e-4
    )
    assert plain.closure_explained_variance_ == 1.0
    # Same training; then the first layer keeps only its weight along the
    # 5 directions ...
    weight = ae.module_.closure.net[0].weight.detach().numpy()
    projected = plain.module_.closure.net[0].weight.detach().numpy()
    projected = projected @ pca.components_.T @ pca.components_
    np.testing.assert_allclose(weight, projected, atol=1e-5)
    # ... so the closure does not see a move orthogonal to them (in the
    # scaled units), and its Jacobian rows have no component along it.
    move = np.random.default_rng(0).normal(size=X.shape[1])
    move = (move - pca.components_.T @ (pca.components_ @ move)) * scale
    Z, Z_moved = ae.transform(X[:5]), ae.transform(X[:5] + move)
    np.testing.assert_allclose(Z_moved[:, 2:], Z[:, 2:], atol=1e-4)
    np.testing.assert_allclose(ae.jacobian(X[:5])[:, 2:] @ move, 0, atol=1e-4)
    # On the data the closure barely changes: these directions hold its
    # variance.
    check = X[np.linspace(0, len(X) - 1, 256).astype(int)]  # as the library
    change = ae.transform(check)[:, 2:] - plain.transform(check)[:, 2:]
    spread = plain.transform(check)[:, 2:].std(axis=0)
    relative = np.median(change.std(axis=0) / spread)
    assert ae.closure_pca_shift_ == pytest.approx(relative, rel=0.1)
    assert ae.closure_pca_shift_ < 1e-2
    assert plain.closure_pca_shift_ == 0.0


@pytest.mark.filterwarnings("ignore:closure_pca=0.99 moved")
def test_closure_pca_by_explained_variance_or_every_direction(system, pp_data):
    from sklearn.decomposition import PCA

    X = pp_data[0]
    ae = fit_with_closure_pca(system, X, 0.99)
    pca = PCA(0.99).fit((X - X.mean(axis=0)) / np.sqrt(X.var(axis=0).mean()))
    weight = ae.module_.closure.net[0].weight.detach()
    assert torch.linalg.matrix_rank(weight) == pca.n_components_ < X.shape[1]
    assert 0.99 < ae.closure_explained_variance_ < 1
    # As many directions as features: nothing is projected.
    every = fit_with_closure_pca(system, X, X.shape[1])
    assert every.closure_explained_variance_ == 1.0
    plain = fit_with_closure_pca(system, X, None)
    np.testing.assert_array_equal(every.transform(X), plain.transform(X))


def test_closure_pca_warns_when_the_closure_moves_on_the_data(system, pp_data):
    X = pp_data[0]
    with pytest.warns(UserWarning, match="closure_pca=0.5 moved the closure"):
        ae = fit_with_closure_pca(system, X, 0.5, warm_start=True)
    # At least as many directions as closure coordinates (n_components - d*).
    assert torch.linalg.matrix_rank(ae.module_.closure.net[0].weight.detach()) == 2
    assert ae.closure_pca_shift_ > 1e-2
    # A rank-deficient closure: the conditioning advice names closure_pca.
    last = ae.module_.closure.net[-1]
    with torch.no_grad():
        last.weight[1] = last.weight[0]
        last.bias[1] = last.bias[0]
    ae.set_params(lr=1e-12, max_epochs=1)
    with pytest.warns(ConditioningWarning, match="closure_pca=0.5 removed"):
        ae.fit(X)
    with pytest.raises(ValueError, match="closure_pca=1 keeps fewer"):
        ClosureAutoencoder(observables=system.observables, closure_pca=1).fit(X)


@pytest.mark.parametrize("closure_pca", [0, 1.0, -0.5, "10"])
def test_closure_pca_rejects_bad_values(pp_data, closure_pca):
    with pytest.raises(ValueError, match="closure_pca"):
        ClosureAutoencoder(closure_pca=closure_pca, max_epochs=1).fit(pp_data[0])


@pytest.mark.parametrize("n_rows", [40, 300])  # the Gram and covariance routes
@pytest.mark.parametrize("closure_pca", [5, 0.95, 0.5])
def test_closure_pca_keeps_the_leading_principal_directions(n_rows, closure_pca):
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    sample = rng.normal(size=(n_rows, 8)) * np.geomspace(10, 0.1, 8)
    X = (sample @ rng.normal(size=(8, 100)) + rng.normal(size=100)).astype(np.float32)
    ae = ClosureAutoencoder(
        n_components=3,
        closure_pca=closure_pca,
        max_epochs=1,
        validation_fraction=None,
        random_state=0,
    ).fit(X)
    closure = ae.module_.closure
    scaled = closure.standardize(torch.as_tensor(X)).numpy()
    # At least as many directions as closure coordinates (3).
    pca = PCA(closure_pca).fit(scaled)
    pca = PCA(max(pca.n_components_, 3)).fit(scaled)
    span = pca.components_.T @ pca.components_
    W = closure.net[0].weight.detach().numpy() * closure.x_scale.numpy()
    np.testing.assert_allclose(W @ span, W, atol=1e-4)
    expected = pca.explained_variance_ratio_.sum()
    assert ae.closure_explained_variance_ == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    ("n_samples", "epochs"),
    # 36 training rows in batches of 8 make 5 steps per epoch: 12 epochs make
    # the 60 steps; 360 rows make 45 per epoch and min_epochs decides.
    [(40, 12), (400, 3)],
)
def test_a_small_data_set_trains_for_the_minimum_steps(system, n_samples, epochs):
    X = system.sample_initial(n_samples, random_state=0)
    ae = ClosureAutoencoder(
        observables=system.observables,
        n_components=3,
        hidden=(8,),
        min_steps=60,
        min_epochs=3,
        batch_size=8,
        random_state=0,
    ).fit(X)
    assert ae.fit_epochs_ == epochs
    assert len(ae.history_) == epochs
    # The learning rate has decayed along the cosine to a hundredth of lr.
    assert ae.optimizer_.param_groups[0]["lr"] == pytest.approx(1e-5, rel=0.2)


def test_one_training_row_gives_finite_scales():
    """One row has no spread (NaN with Bessel's correction): its scale is 1,
    not NaN in every output."""
    X = np.random.default_rng(0).random((1, 6))
    ae = ClosureAutoencoder(
        n_components=2, hidden=(8,), validation_fraction=None, max_epochs=1
    ).fit(X)
    assert np.all(np.isfinite(ae.latent_scale_))
    assert np.all(np.isfinite(ae.inverse_transform(ae.transform(X))))
