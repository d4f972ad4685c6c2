"""scikit-learn's estimator checks.

``ClosureAutoencoder`` is checked as a plain transformer (no fixed
observables). ``PartialForceDynamics`` cannot be checked as a plain regressor:
its ``fit`` needs latent coordinates linked to their encoder and microscopic
forces, not an arbitrary ``(X, y)``; the checks that do not fit are run, the
others are listed below with the reason.
"""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from skmacro import ClosureAutoencoder, PartialForceDynamics

_DYNAMICS_NEEDS_ENCODER = (
    "fit needs Z from a fitted ClosureAutoencoder (linked to its states) and "
    "forces F of shape (n_samples, N); a plain (X, y) regression problem is "
    "rejected with a ValueError that says so"
)

#: Every check that fits PartialForceDynamics on generic data.
DYNAMICS_EXPECTED_FAILURES = {
    name: _DYNAMICS_NEEDS_ENCODER
    for name in (
        "check_estimators_dtypes",
        "check_fit_score_takes_y",
        "check_sample_weight_equivalence_on_dense_data",
        "check_sample_weight_equivalence_on_sparse_data",
        "check_sample_weights_not_an_array",
        "check_sample_weights_list",
        "check_sample_weights_shape",
        "check_sample_weights_not_overwritten",
        "check_estimators_fit_returns_self",
        "check_complex_data",
        "check_dtype_object",
        "check_estimators_empty_data_messages",
        "check_pipeline_consistency",
        "check_estimators_nan_inf",
        "check_estimators_overwrite_params",
        "check_estimator_sparse_array",
        "check_estimator_sparse_matrix",
        "check_estimator_sparse_tag",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_regressors_train",
        "check_regressor_data_not_an_array",
        "check_regressors_int",
        "check_regressors_no_decision_function",
        "check_supervised_y_2d",
        "check_regressor_multioutput",
        "check_fit2d_predict1d",
        "check_methods_subset_invariance",
        "check_methods_sample_order_invariance",
        "check_fit2d_1sample",
        "check_fit2d_1feature",
        "check_dict_unchanged",
        "check_dont_overwrite_parameters",
        "check_fit_idempotent",
        "check_fit_check_is_fitted",
        "check_n_features_in",
        "check_n_features_in_after_fitting",
        "check_positive_only_tag_during_fit",
        "check_requires_y_none",
        "check_regressors_predict_single_target",
        "check_readonly_memmap_input",
        "check_estimators_partial_fit_n_features",
    )
}


#: Behaviour both estimators inherit from skorch's NeuralNet.
SKORCH_EXPECTED_FAILURES = {
    "check_no_attributes_set_in_init": (
        "skorch's NeuralNet.__init__ sets history_, initialized_ and "
        "virtual_params_ (the net's bookkeeping, not fitted state)"
    ),
    "check_do_not_raise_errors_in_init_or_set_params": (
        "skorch's set_params re-initialises callbacks/optimizer eagerly, so "
        "nonsense values (a number as callbacks) raise at set_params, not fit"
    ),
}


def _expected_failures(estimator):
    if isinstance(estimator, PartialForceDynamics):
        return {**SKORCH_EXPECTED_FAILURES, **DYNAMICS_EXPECTED_FAILURES}
    return SKORCH_EXPECTED_FAILURES


@parametrize_with_checks(
    [
        ClosureAutoencoder(max_epochs=2, random_state=0),
        PartialForceDynamics(max_epochs=2, random_state=0),
    ],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def test_dynamics_rejects_plain_regression_data():
    import numpy as np

    with pytest.raises(ValueError, match="carries no encoder"):
        PartialForceDynamics(max_epochs=1).fit(np.ones((5, 3)), np.ones((5, 3)))
