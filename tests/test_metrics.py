import numpy as np
import pytest
import torch
from sklearn.pipeline import Pipeline

from skmacro import RolloutDivergenceError
from skmacro.metrics import mean_relative_error, rollout_error, select_members


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


def test_select_members_keeps_the_best_greedy_ensemble(system, pp_data, make_pipe):
    X, F = pp_data
    pipe = make_pipe(2, 5, n_members=4).fit(X, F)
    trajectories = system.simulate(
        system.sample_initial(3, random_state=5), t_end=2.0, dt=0.01, stride=10
    )
    t = np.arange(trajectories.shape[1]) * 0.1
    _, Z_true, _, Z_members = rollout_error(
        pipe, t, trajectories, dt=0.01, return_members=True
    )
    d_star = pipe[0].n_observables_
    own = [
        mean_relative_error(Z_true[..., :d_star], m[..., :d_star], squared=False)
        for m in Z_members
    ]

    selected, members, errors = select_members(pipe, t, trajectories, dt=0.01)
    assert errors.shape == (4,) and sorted(members) == sorted(set(members))
    assert members[0] == int(np.argmin(own)) and errors[0] == pytest.approx(min(own))
    assert len(members) == np.argmin(errors) + 1
    assert selected[-1].n_members_ == len(members) and pipe[-1].n_members_ == 4
    assert selected[0] is pipe[0]
    error, _, _ = rollout_error(selected, t, trajectories, dt=0.01)
    assert error == pytest.approx(errors.min(), rel=1e-5)

    two, first, path = select_members(pipe, t, trajectories, 2, dt=0.01)
    np.testing.assert_array_equal(first[: len(members)], members[:2])
    np.testing.assert_allclose(path, errors)
    assert two[-1].n_members_ == 2
    # The mask scores some states only: the first state alone is exact.
    mask = np.zeros(trajectories.shape[:2], dtype=bool)
    mask[:, 0] = True
    _, _, exact = select_members(pipe, t, trajectories, dt=0.01, mask=mask)
    np.testing.assert_allclose(exact, 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="n_members must be"):
        select_members(pipe, t, trajectories, 5, dt=0.01)
    # A member whose rollout diverges comes last; with every one, none is kept.
    blown = pipe[-1].keep_members(range(4))
    with torch.no_grad():
        for parameter in blown.module_.field.member(1).parameters():
            parameter.mul_(1e4)
    blown_pipe = Pipeline([("ae", pipe[0]), ("dyn", blown)])
    _, order, path = select_members(blown_pipe, t, trajectories, 4, dt=0.01)
    assert order[-1] == 1 and np.isinf(path[-1]) and np.all(np.isfinite(path[:-1]))
    with torch.no_grad():
        for parameter in blown.module_.parameters():
            parameter.mul_(1e4)
    with pytest.raises(RolloutDivergenceError, match="all 4 members diverged"):
        select_members(blown_pipe, t, trajectories, dt=0.01)
    with pytest.raises(TypeError, match="Pipeline"):
        select_members(pipe[-1], t, trajectories)
