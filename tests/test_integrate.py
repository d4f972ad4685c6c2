import numpy as np
import pytest

from skmacro.integrate import integrate, n_steps_between


def _rotation(y):
    return np.stack([-y[:, 1], y[:, 0]], axis=1)


@pytest.mark.parametrize(("method", "order"), [("rk4", 4), ("euler", 1)])
def test_convergence_order_on_exact_problem(method, order):
    """y' = (-y2, y1) rotates: the exact solution at t = 1 is known."""
    y0 = np.array([[1.0, 0.0]])
    exact = np.array([np.cos(1.0), np.sin(1.0)])
    errors = []
    for n in (10, 20, 40, 80):
        y = integrate(_rotation, y0, 1.0 / n, n, method=method)[-1]
        errors.append(np.linalg.norm(y[0] - exact))
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    np.testing.assert_allclose(rates, order, atol=0.15)


def test_stride_and_bad_method():
    kept = integrate(_rotation, np.ones((1, 2)), 0.1, 10, stride=5)
    assert len(kept) == 3
    with pytest.raises(ValueError, match="did you mean 'rk4'"):
        integrate(_rotation, np.ones((1, 2)), 0.1, 10, method="rk5")


def test_steps_between_times_must_be_whole():
    assert n_steps_between(np.float64(0.0), np.float64(0.3), 0.1) == 3
    with pytest.raises(
        ValueError, match=r"^t=0.1 is not a whole number of steps dt=0.5 after 0;"
    ):
        n_steps_between(np.float64(0.0), np.float64(0.1), 0.5, name="t")
    with pytest.raises(ValueError, match="dt must be a positive finite number"):
        n_steps_between(0.0, 1.0, -0.1)
