import numpy as np
import pytest
import torch
from sklearn.pipeline import Pipeline

from skmacro import RolloutDivergenceError
from skmacro.metrics import (
    greedy_ensemble,
    mean_relative_error,
    rollout_error,
    select_members,
)


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


def test_mask_scores_the_kept_times_only():
    z = np.ones((2, 3, 1))
    pred = z.copy()
    pred[:, 2] = 3.0  # wrong only at the last time
    mask = np.array([True, True, False])
    assert mean_relative_error(z, pred, squared=False, mask=mask) == 0.0
    with pytest.raises(ValueError, match="mask must have shape"):
        mean_relative_error(z, pred, mask=mask[:2])
    per_trajectory = np.array([mask, [False, False, False]])
    with pytest.raises(ValueError, match="mask keeps no time of trajectory 1"):
        mean_relative_error(z, pred, mask=per_trajectory)


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


def test_greedy_ensemble_adds_the_member_that_best_completes_the_mean():
    rng = np.random.default_rng(0)
    z = 1.0 + rng.random((3, 5, 2))
    # Member 1 alone is the best, and member 2 the next best alone, but
    # member 3, which errs the other way, completes member 1's mean better.
    members = np.stack([z * 1.2, z * 1.05, z * 1.08, z * 0.9, np.full_like(z, np.nan)])
    order, errors = greedy_ensemble(z, members)
    np.testing.assert_array_equal(order, [1, 3, 2, 0, 4])
    np.testing.assert_allclose(errors[:3], [0.05, 0.025, 0.01])
    assert np.isinf(errors[-1])
    mean_of_all_finite = members[:4].mean(axis=0)
    assert errors[3] == pytest.approx(mean_relative_error(z, mean_of_all_finite, False))
    # Scored on the first states of each trajectory only.
    mask = np.zeros(z.shape[:2], dtype=bool)
    mask[:, :3] = True
    members[0, :, :3] = z[:, :3]  # exact there, so first on the mask only
    assert greedy_ensemble(z, members, mask=mask)[0][0] == 0
    assert greedy_ensemble(z, members)[0][0] == 1
    with pytest.raises(ValueError, match="z_members must have shape"):
        greedy_ensemble(z, members[0])
