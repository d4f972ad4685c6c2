import numpy as np
import pytest

from skmacro.metrics import mean_relative_error


def test_eq43_squared_and_unsquared():
    z = np.array([[[3.0, 4.0], [0.0, 5.0]]])  # one trajectory, norms 5 and 5
    pred = z + np.array([[[0.0, 1.0], [0.0, 2.0]]])
    assert mean_relative_error(z, pred) == pytest.approx((1 + 4) / 50)
    assert mean_relative_error(z, pred, squared=False) == pytest.approx(3 / 10)
    assert mean_relative_error(z[0], pred[0], squared=False) == pytest.approx(0.3)


def test_mean_over_trajectories_and_nan_is_infinite():
    z = np.ones((2, 4, 1))
    pred = z.copy()
    pred[1] *= 1.5
    assert mean_relative_error(z, pred, squared=False) == pytest.approx(0.25)
    pred[0, 2] = np.nan
    assert mean_relative_error(z, pred) == np.inf


def test_errors():
    with pytest.raises(ValueError, match="same shape"):
        mean_relative_error(np.ones((2, 3, 1)), np.ones((2, 3, 2)))
    with pytest.raises(ValueError, match="zero"):
        mean_relative_error(np.zeros((1, 3, 1)), np.ones((1, 3, 1)))
