import pickle

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
import sklearn
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_val_score
from skorch.dataset import ValidSplit

from skmacro import ClosureAutoencoder, PartialForceDynamics, simulate
from skmacro.metrics import make_macro_scorer
from skmacro.plotting import plot_history
from skmacro.sampling import densify, sample_partial_forces


@pytest.fixture(scope="module")
def fitted_pipe(pp_data, make_pipe):
    X, F = pp_data
    return make_pipe().fit(X, F)


def test_every_force_format_gives_the_same_model(system, pp_data, fitted_ae, make_pipe):
    X, _ = pp_data
    F, mask = sample_partial_forces(system, X, 0.2, random_state=1, return_mask=True)
    F_csr = sample_partial_forces(system, X, 0.2, random_state=1, format="sparse")
    zeros = np.nan_to_num(F)
    variants = {
        "dense": (F, {}),
        "csr_array": (F_csr, {}),
        "csr_matrix": (sp.csr_matrix(F_csr), {}),
        "particle mask": (zeros, {"mask": mask}),
        "coordinate mask": (zeros, {"mask": ~np.isnan(F)}),
        "inclusion_proba": (F, {"inclusion_proba": np.full(100, 0.2)}),
    }
    Z = fitted_ae.transform(X)
    predictions = {}
    for name, (forces, params) in variants.items():
        dyn = PartialForceDynamics(max_epochs=3, random_state=0)
        dyn.fit(Z, forces, **params)
        predictions[name] = dyn.predict(Z[:20])
    for name, pred in predictions.items():
        np.testing.assert_allclose(pred, predictions["dense"], rtol=1e-5, err_msg=name)
    # Fit parameters reach the dynamics step of a Pipeline by prefix.
    pipe = make_pipe(1, 3).fit(X, zeros, dyn__mask=mask)
    reference = make_pipe(1, 3).fit(X, F)
    np.testing.assert_allclose(pipe.predict(X[:5]), reference.predict(X[:5]), rtol=1e-5)


def test_mask_through_metadata_routing(system, pp_data, make_pipe):
    X, _ = pp_data
    F, mask = sample_partial_forces(system, X, 0.2, random_state=1, return_mask=True)
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = make_pipe()
        pipe[-1].set_fit_request(mask=True)
        pipe.fit(X, np.nan_to_num(F), mask=mask)
        routed = pipe.predict(X[:20])
    reference = make_pipe().fit(X, F).predict(X[:20])
    np.testing.assert_allclose(routed, reference, rtol=1e-5)


def test_non_uniform_inclusion_probabilities_are_unbiased(system, pp_data, fitted_ae):
    """Horvitz-Thompson weights 1/pi_i keep L_x,p unbiased for any pi."""
    from skmacro.forces import PartialForces
    from skmacro.statistics import partial_force_statistics

    X = np.repeat(pp_data[0][:2], 3000, axis=0)
    rng = np.random.default_rng(0)
    proba = np.where(np.arange(100) < 50, 0.5, 0.1)  # u cells sampled more
    mask = rng.random(X.shape) < proba
    F = np.where(mask, system.forces(X), np.nan)
    stats = partial_force_statistics(
        fitted_ae, X, PartialForces(F, 100, inclusion_proba=proba)
    )
    full = partial_force_statistics(
        fitted_ae, X[::3000], PartialForces(system.forces(X[::3000]), 100)
    )
    for k in range(2):
        b = stats["b"][3000 * k : 3000 * (k + 1)].numpy()
        sem = b.std(axis=0) / np.sqrt(len(b))
        assert np.all(np.abs(b.mean(axis=0) - full["b"][k].numpy()) < 5 * sem)


def test_grid_search_default_scoring_and_parallel(pp_data, make_pipe):
    X, F = pp_data
    grid = GridSearchCV(
        make_pipe(ae_epochs=2, dyn_epochs=3),
        {"dyn__latent_model": ["mlp", "onsager"]},
        cv=2,
        n_jobs=2,
    ).fit(X, F)
    assert set(grid.cv_results_["mean_test_score"].round(12)) != {np.nan}
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))
    assert grid.best_estimator_.predict(X[:3]).shape == (3, 4)


def test_cross_val_score_with_sparse_forces_and_macro_scorer(
    system, pp_data, make_pipe
):
    X, _ = pp_data
    F = sample_partial_forces(system, X, 0.2, random_state=1, format="sparse")
    # scikit-learn's cross_val_score rejects a sparse y; densify keeps the
    # computed entries (explicit zeros included) and marks the rest NaN.
    with pytest.raises(ValueError, match="'y' parameter"):
        cross_val_score(make_pipe(1, 1), X, F, cv=3)
    grid = GridSearchCV(make_pipe(1, 1), {"dyn__lr": [1e-3]}, cv=3).fit(X, F)
    assert np.isfinite(grid.best_score_)
    F = densify(F)
    scores = cross_val_score(make_pipe(2, 3), X, F, cv=3)
    assert scores.shape == (3,) and np.all(np.isfinite(scores))
    mse = cross_val_score(
        make_pipe(2, 3),
        X,
        F,
        cv=3,
        scoring=make_macro_scorer("neg_mean_squared_error"),
    )
    assert np.all(mse <= 0)


def test_score_agrees_with_trajectory_error(system, make_pipe):
    """GridSearchCV over lambda_cond, with the default (p-aware) scoring and
    whole trajectories held out, must prefer a model whose trajectory error,
    measured independently on unseen trajectories, is (within near-ties) the
    lowest."""
    from skmacro.experiments.predator_prey import training_states
    from skmacro.metrics import rollout_error

    X = training_states(8, random_state=3)
    F = sample_partial_forces(system, X, 0.2, random_state=3)
    groups = np.repeat(np.arange(8), 300)
    base = make_pipe(ae_epochs=20, dyn_epochs=60)
    grid_values = [0.0, 1e-6, 1e-2]
    grid = GridSearchCV(base, {"ae__lambda_cond": grid_values}, cv=GroupKFold(2))
    grid.fit(X, F, groups=groups)
    test = system.simulate(
        system.sample_initial(10, random_state=4), 29.9, 0.01, stride=10
    )
    t = np.arange(0, 30, 0.1)
    errors = [
        rollout_error(clone(base).set_params(ae__lambda_cond=lam).fit(X, F), t, test)[0]
        for lam in grid_values
    ]
    chosen = errors[grid_values.index(grid.best_params_["ae__lambda_cond"])]
    # Near-ties (lambda = 0 vs 1e-6 differ by ~10% here) may go either way;
    # a clearly worse model (lambda = 1e-2, ~2x the error) must not be chosen.
    assert chosen <= 1.15 * min(errors), (grid.cv_results_, errors)
    assert max(errors) > 1.5 * min(errors), (
        "the grid should contain a clearly worse model"
    )


def test_pickle_and_joblib_round_trips(fitted_pipe, pp_data, tmp_path):
    X = pp_data[0][:30]
    expected = fitted_pipe.predict(X)
    restored = pickle.loads(pickle.dumps(fitted_pipe))
    np.testing.assert_array_equal(restored.predict(X), expected)
    joblib.dump(fitted_pipe, tmp_path / "pipe.joblib")
    loaded = joblib.load(tmp_path / "pipe.joblib")
    np.testing.assert_array_equal(loaded.predict(X), expected)
    Z = simulate(loaded, X[:2], np.linspace(0, 1, 5))
    np.testing.assert_array_equal(Z, simulate(fitted_pipe, X[:2], np.linspace(0, 1, 5)))


def test_lambda_observables_cannot_pickle_with_clear_message(pp_data):
    ae = ClosureAutoencoder(
        observables=lambda x: x[:, :2].mean(1, keepdim=True), max_epochs=1
    ).fit(pp_data[0][:50])
    with pytest.raises(pickle.PicklingError, match="module level"):
        pickle.dumps(ae)


def test_clone_keeps_callable_observables(system):
    ae = ClosureAutoencoder(observables=system.observables, lambda_cond=1e-5)
    cloned = clone(ae)
    # clone deep-copies parameters: the same method, bound to a copy.
    assert cloned.observables.__func__ is system.observables.__func__
    x = torch.rand(3, 100)
    torch.testing.assert_close(cloned.observables(x), system.observables(x))
    assert cloned.get_params()["lambda_cond"] == 1e-5


def test_device_auto_resolves(pp_data):
    ae = ClosureAutoencoder(device="auto", max_epochs=1).fit(pp_data[0][:50])
    # The parameter keeps its value; the fitted module lives where it said.
    assert ae.device == "auto" and ae.device_.type in ("cpu", "cuda")
    restored = pickle.loads(pickle.dumps(ae))
    assert restored.device == "auto"
    np.testing.assert_array_equal(
        restored.transform(pp_data[0][:5]), ae.transform(pp_data[0][:5])
    )


def test_feature_names_pandas_output_and_html(fitted_pipe, pp_data):
    ae = fitted_pipe[0]
    names = ae.get_feature_names_out()
    assert list(names) == ["u_mean", "v_mean", "closure_0", "closure_1"]
    pd = pytest.importorskip("pandas")
    frame = (
        clone(ae)
        .set_output(transform="pandas")
        .fit(pp_data[0])
        .transform(pp_data[0][:5])
    )
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(names)
    assert "ClosureAutoencoder" in fitted_pipe._repr_html_()


def test_verbose_progress_history_and_plot(pp_data, capsys, make_pipe):
    X, F = pp_data
    pipe = make_pipe(2, 3)
    pipe.set_params(ae__verbose=1, dyn__verbose=1).fit(X, F)
    err = capsys.readouterr().err
    assert "ClosureAutoencoder" in err and "PartialForceDynamics" in err
    assert "statistics pass: 100%|" in err and f"{len(X)}/{len(X)}" in err
    pipe.set_params(ae__verbose=0, dyn__verbose=0).fit(X, F)
    assert capsys.readouterr().err == ""
    # The bar's stream is not part of the fitted state.
    restored = pickle.loads(pickle.dumps(pipe))
    np.testing.assert_array_equal(restored.predict(X[:3]), pipe.predict(X[:3]))
    history = pipe[-1].history_
    # Epochs of two steps are evaluated in groups of at least 25 steps, and
    # after the last epoch.
    assert history[:, "epoch"] == [3] and all(
        k in history[-1] for k in ("train_loss", "valid_loss", "dur", "step", "lr")
    )
    import matplotlib

    matplotlib.use("Agg")
    ax = plot_history(pipe[-1])
    assert ax.get_xlabel() == "epoch" and len(ax.lines) >= 2


def test_warm_start_continues_training(pp_data, fitted_ae):
    X, F = pp_data
    Z = fitted_ae.transform(X)
    dyn = PartialForceDynamics(max_epochs=3, warm_start=True, random_state=0).fit(Z, F)
    key = "field.members.0.net.0.weight"
    first = dyn.module_.state_dict()[key].clone()
    dyn.fit(Z, F)
    assert dyn.history_[:, "epoch"] == [3, 6]
    assert not np.allclose(first, dyn.module_.state_dict()[key])
    cold = PartialForceDynamics(max_epochs=3, random_state=0).fit(Z, F)
    cold.fit(Z, F)
    assert cold.history_[:, "epoch"] == [3]


def test_group_split_and_early_stopping(pp_data, fitted_ae):
    X, F = pp_data
    Z = fitted_ae.transform(X)
    groups = np.repeat(np.arange(6), len(X) // 6)
    dyn = PartialForceDynamics(
        max_epochs=3, train_split=ValidSplit(GroupKFold(3)), random_state=0
    ).fit(Z, F, groups=groups)
    assert "valid_loss" in dyn.history_[-1]
    # At this rate float32 weights do not move: the validation loss never
    # improves on the first evaluation, so training stops `patience`
    # evaluations later.
    dyn = PartialForceDynamics(max_epochs=300, patience=2, lr=1e-12, random_state=0)
    dyn.fit(Z, F, groups=groups)
    assert len(dyn.history_) == 3 and dyn.history_[-1]["epoch"] < 300


def test_model_saved_for_cuda_loads_on_cpu_only_machine(fitted_pipe, pp_data):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    dyn = pickle.loads(pickle.dumps(fitted_pipe[-1]))
    dyn.device = "cuda"  # as if it had been trained on a GPU
    payload = pickle.dumps(dyn)
    with pytest.warns(UserWarning, match="not available"):
        restored = pickle.loads(payload)
    assert str(restored.device) == "cpu"
    Z = fitted_pipe[0].transform(pp_data[0][:10])
    np.testing.assert_array_equal(restored.predict(Z), fitted_pipe[-1].predict(Z))


def test_validation_rows_are_unseen_by_the_training_statistics(system, pp_data):
    """The control variate, the latent scales and every training row's
    statistics come from the training rows: whatever the validation rows
    hold, training follows the same path."""
    X, F = pp_data
    ae = ClosureAutoencoder(
        observables=system.observables, n_components=4, max_epochs=3, random_state=0
    )
    first = clone(ae).fit(X)
    valid = first.validation_rows_
    X_other = X.copy()
    X_other[valid] = system.sample_initial(len(valid), random_state=9)
    second = clone(ae).fit(X_other)
    np.testing.assert_array_equal(second.validation_rows_, valid)
    np.testing.assert_array_equal(
        first.history_[:, "train_loss"], second.history_[:, "train_loss"]
    )
    np.testing.assert_array_equal(first.latent_scale_, second.latent_scale_)

    Z = first.transform(X)
    dyn = PartialForceDynamics(max_epochs=5, random_state=0)
    fitted = clone(dyn).fit(Z, F)
    valid = fitted.validation_rows_
    F_other = F.copy()
    F_other[valid] = np.where(np.isnan(F[valid]), np.nan, 10.0)
    other = clone(dyn).fit(Z, F_other)
    np.testing.assert_array_equal(
        fitted.history_[:, "train_loss"], other.history_[:, "train_loss"]
    )
    assert not np.array_equal(
        fitted.history_[:, "valid_loss"], other.history_[:, "valid_loss"]
    )
    np.testing.assert_array_equal(fitted.latent_mean_, other.latent_mean_)


def test_parameters_are_the_constructors_and_the_prefixed_ones():
    params = PartialForceDynamics(latent_model__hidden=(8,)).get_params(deep=False)
    assert "latent_model__hidden" in params
    for internal in ("dataset", "iterator_train", "iterator_valid", "compile"):
        assert internal not in params
    assert not any(name.startswith("_") for name in params)
    with pytest.warns(FutureWarning, match="latent_model__"):
        dyn = PartialForceDynamics(module__hidden=(8,))
    assert dyn.get_params()["latent_model__hidden"] == (8,)
    with pytest.warns(FutureWarning, match="latent_model__"):
        dyn.set_params(module__activation="relu")
    assert dyn.get_params()["latent_model__activation"] == "relu"
    with pytest.raises(ValueError, match="iterator_train__batch_size"):
        ClosureAutoencoder(iterator_train__batch_size=3, max_epochs=1).fit(
            np.random.default_rng(0).normal(size=(20, 5))
        )


def test_train_split_none_trains_on_every_row(pp_data, fitted_ae):
    X, F = pp_data
    dyn = PartialForceDynamics(train_split=None, max_epochs=2).fit(
        fitted_ae.transform(X), F
    )
    assert dyn.validation_rows_ is None and len(dyn.train_rows_) == len(X)
    assert "valid_loss" not in dyn.history_[-1]


def test_tags_say_what_fit_takes():
    tags = PartialForceDynamics().__sklearn_tags__()
    assert tags.target_tags.multi_output and not tags.target_tags.single_output
    assert tags.target_tags.required


def test_pandas_output_through_the_pipeline(pp_data, make_pipe):
    pd = pytest.importorskip("pandas")
    X, F = pp_data
    pipe = make_pipe(1, 2).set_output(transform="pandas").fit(X, F)
    frame = pipe[0].transform(X[:4])
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns)[:2] == ["u_mean", "v_mean"]
    reference = make_pipe(1, 2).fit(X, F)
    # The same fit up to float32 rounding: a frame's values may reach the
    # dynamics in another memory layout, which changes summation orders.
    np.testing.assert_allclose(
        pipe.predict(X[:4]), reference.predict(X[:4]), rtol=1e-5, atol=1e-7
    )
    assert pipe.score(X, F) == pytest.approx(reference.score(X, F), rel=1e-5)
    # pandas keeps a frame's attrs through a reordering, which its states do
    # not follow: the dynamics refuses it.
    Z = pipe[0].transform(X[:20])
    with pytest.raises(ValueError, match="reordered after transform"):
        pipe[1].score(Z.iloc[::-1], F[:20])


def numpy_observables(X):
    return np.asarray(X).mean(axis=1, keepdims=True)


def test_observables_that_are_not_torch_differentiable_are_named(pp_data):
    with pytest.raises(ValueError, match="numpy_observables must be a torch"):
        ClosureAutoencoder(observables=numpy_observables, max_epochs=1).fit(pp_data[0])


def test_torch_tensors_are_read_as_arrays(pp_data, fitted_ae):
    X, F = pp_data
    tensor = torch.from_numpy(X[:20])
    np.testing.assert_array_equal(
        fitted_ae.transform(tensor), fitted_ae.transform(X[:20])
    )
