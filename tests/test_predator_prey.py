"""Tests of the predator-prey system (paper Eq. 15, 16, 40-42)."""

import pickle

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from skmacro.systems.predator_prey import PredatorPrey


def _stencil_reference(X, n, a, b, D, scale):
    """Eq. 42 written out cell by cell, the boundary rows as in Eq. 41."""
    F = np.empty_like(X)
    for s in range(len(X)):
        u, v = X[s, :n], X[s, n:]
        for i in range(n):
            if i == 0:
                lap_u, lap_v = u[1] - u[0], v[1] - v[0]
            elif i == n - 1:
                lap_u, lap_v = u[n - 2] - u[n - 1], v[n - 2] - v[n - 1]
            else:
                lap_u = u[i + 1] - 2 * u[i] + u[i - 1]
                lap_v = v[i + 1] - 2 * v[i] + v[i - 1]
            F[s, i] = u[i] * (1 - u[i] - v[i]) + D * scale * lap_u
            F[s, n + i] = a * v[i] * (u[i] - b) + scale * lap_v
    return F


@pytest.mark.parametrize("scaling", ["reference", "physical"])
@pytest.mark.parametrize("D", [0.0, 0.7])
def test_forces_match_hand_written_stencil(scaling, D):
    n = 4
    system = PredatorPrey(n_cells=n, a=2.5, b=0.3, D=D, diffusion_scaling=scaling)
    X = np.random.default_rng(1).uniform(0, 1, size=(3, 2 * n))
    scale = 1.0 if scaling == "reference" else n**2
    expected = _stencil_reference(X, n, 2.5, 0.3, D, scale)
    F = system.forces(X)
    assert F.shape == (3, 2 * n) and F.dtype == np.float64
    np.testing.assert_allclose(F, expected, rtol=1e-13, atol=1e-13)


def test_defaults_are_the_paper_experiments():
    system = PredatorPrey()
    assert (system.n_cells, system.a, system.b, system.D) == (50, 3.0, 0.4, 0.0)
    assert system.n_particles == system.n_features == 100
    assert system.particle_dim == 1
    np.testing.assert_allclose(system.grid, (np.arange(1, 51) - 0.5) * 0.02)
    # The reference code's unscaled stencil: effective diffusion dx^2.
    X = np.zeros((1, 100))
    X[0, 50 + 10] = 1.0
    F = system.forces(X)
    np.testing.assert_allclose(F[0, 59:62], [1.0, -2.0 - 3 * 0.4, 1.0])


@pytest.mark.parametrize("n_cells", [1, 2, 7])
def test_partial_forces_equal_full_forces(n_cells):
    system = PredatorPrey(n_cells=n_cells, D=0.3)
    X = system.sample_initial(5, random_state=2)
    full = system.forces(X)
    everything = np.arange(system.n_particles)
    np.testing.assert_allclose(
        system.partial_forces(X, everything)[..., 0], full, rtol=1e-14, atol=1e-15
    )
    rng = np.random.default_rng(0)
    per_row = np.stack([rng.permutation(system.n_particles)[:2] for _ in range(5)])
    out = system.partial_forces(X, per_row)
    assert out.shape == (5, 2, 1)
    np.testing.assert_allclose(
        out[..., 0], np.take_along_axis(full, per_row, axis=1), rtol=1e-14
    )


def test_partial_forces_never_evaluates_all_forces(monkeypatch):
    system = PredatorPrey()
    X = system.sample_initial(2, random_state=0)
    expected = system.forces(X)[:, [0, 49, 50, 99]]

    def forbidden(X):
        raise AssertionError("partial_forces must not evaluate all forces")

    monkeypatch.setattr(system, "forces", forbidden)
    out = system.partial_forces(X, [0, 49, 50, 99])
    np.testing.assert_allclose(out[..., 0], expected, rtol=1e-14)


def test_rk4_simulation_matches_tight_ode_solution():
    system = PredatorPrey(D=0.5)
    X0 = system.sample_initial(2, random_state=3)
    traj = system.simulate(X0, t_end=2.0, dt=0.01, method="rk4", stride=50)
    assert traj.shape == (2, 5, 100)
    t_eval = np.linspace(0.0, 2.0, 5)
    for x0, states in zip(X0, traj, strict=True):
        ref = solve_ivp(
            lambda t, x: system.forces(x[None])[0],
            (0.0, 2.0),
            x0,
            method="DOP853",
            t_eval=t_eval,
            rtol=1e-12,
            atol=1e-12,
        )
        np.testing.assert_allclose(states, ref.y.T, atol=1e-8)


def test_euler_simulation_matches_manual_loop():
    system = PredatorPrey()
    X0 = system.sample_initial(3, random_state=4)
    traj = system.simulate(X0, t_end=1.0, dt=0.01, method="euler", stride=10)
    assert traj.shape == (3, 11, 100)
    x, kept = X0.copy(), [X0]
    for step in range(1, 101):
        x = x + 0.01 * system.forces(x)
        if step % 10 == 0:
            kept.append(x)
    np.testing.assert_allclose(traj, np.stack(kept, axis=1), rtol=1e-14, atol=0)


def test_reference_scaling_is_euler_stable_and_physical_is_not():
    X0 = PredatorPrey().sample_initial(2, random_state=5)
    stable = PredatorPrey().simulate(X0, t_end=30.0, dt=0.01, method="euler")
    assert np.all(np.isfinite(stable)) and np.abs(stable).max() < 2.0
    physical = PredatorPrey(diffusion_scaling="physical")
    # Stable below the explicit limit dt <= dx^2 / 2 = 2e-4 ...
    fine = physical.simulate(X0, t_end=0.1, dt=1e-4, method="euler")
    assert np.abs(fine).max() < 2.0
    # ... and blowing up at the paper's dt = 0.01 within ten steps.
    coarse = physical.simulate(X0, t_end=0.1, dt=0.01, method="euler")
    assert np.abs(coarse[:, -1]).max() > 1e3


def test_initial_states_follow_eq_40_with_reference_ranges():
    system = PredatorPrey()
    X0 = system.sample_initial(500, random_state=0)
    u0, v0 = X0[:, :50], X0[:, 50:]
    np.testing.assert_allclose(u0 + v0, 1.0, atol=1e-15)
    # u0 - mean is A cos(5 pi x): recover A and m from two grid points.
    cos = np.cos(5 * np.pi * system.grid)
    amplitude = (u0[:, 0] - u0[:, 2]) / (cos[0] - cos[2])
    mean = u0[:, 0] - amplitude * cos[0]
    np.testing.assert_allclose(u0, mean[:, None] + amplitude[:, None] * cos)
    assert amplitude.min() >= 0 and amplitude.max() <= 0.2
    assert mean.min() >= 0.4 and mean.max() <= 0.6
    # Same draws as the reference code: amplitudes first, then means.
    rng = np.random.RandomState(0)
    np.testing.assert_allclose(amplitude, rng.uniform(0.0, 0.2, 500), atol=1e-12)
    np.testing.assert_allclose(mean, rng.uniform(0.4, 0.6, 500), atol=1e-12)
    np.testing.assert_array_equal(X0, system.sample_initial(500, random_state=0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_observables_are_differentiable_means(dtype):
    system = PredatorPrey(n_cells=5)
    X = torch.rand(4, 10, dtype=dtype, generator=torch.Generator().manual_seed(0))
    X.requires_grad_(True)
    z = system.observables(X)
    assert z.shape == (4, 2) and z.dtype == dtype
    torch.testing.assert_close(z[:, 0], X[:, :5].mean(1))
    torch.testing.assert_close(z[:, 1], X[:, 5:].mean(1))
    z.sum().backward()
    torch.testing.assert_close(X.grad, torch.full_like(X, 0.2))
    assert system.observable_names == ("u_mean", "v_mean")


def test_system_and_bound_observables_pickle():
    system = PredatorPrey(n_cells=5, D=0.1)
    observables = pickle.loads(pickle.dumps(system.observables))
    X = torch.linspace(0, 1, 30, dtype=torch.float64).reshape(3, 10)
    torch.testing.assert_close(observables(X), system.observables(X))
    clone = pickle.loads(pickle.dumps(system))
    assert repr(clone) == repr(system)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_cells": 0}, "n_cells"),
        ({"n_cells": 2.5}, "n_cells"),
        ({"a": float("nan")}, "a must"),
        ({"b": "0.4"}, "b must"),
        ({"D": -1.0}, "D must"),
        ({"diffusion_scaling": "physicl"}, "did you mean 'physical'"),
        ({"init_mean_range": (0.6, 0.4)}, "init_mean_range"),
        ({"init_amplitude_range": 0.2}, "init_amplitude_range"),
    ],
)
def test_bad_constructor_arguments_raise_on_use(kwargs, match):
    system = PredatorPrey(**kwargs)  # __init__ only stores
    with pytest.raises(ValueError, match=match):
        system.sample_initial(1)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_states_are_rejected(bad):
    system = PredatorPrey(n_cells=3)
    X = np.zeros((2, 6))
    X[1, 4] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        system.forces(X)
    with pytest.raises(ValueError, match="NaN or inf"):
        system.partial_forces(X, [0])


def test_bad_shapes_and_particles_are_rejected():
    system = PredatorPrey(n_cells=3)
    with pytest.raises(ValueError, match=r"shape \(n_samples, 6\)"):
        system.forces(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"shape \(n_samples, 6\)"):
        system.observables(torch.zeros(2, 7))
    X = np.zeros((2, 6))
    with pytest.raises(TypeError, match="integer"):
        system.partial_forces(X, [0.0, 1.0])
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        system.partial_forces(X, [6])
    with pytest.raises(ValueError, match="shape"):
        system.partial_forces(X, np.zeros((3, 1), dtype=int))


def test_latent_structures_ceiling_fits_every_configuration_with_all_forces():
    from skmacro.experiments.predator_prey import latent_structures

    fits = []
    errors, seconds = latent_structures(
        n_trajectories=1,
        repeats=1,
        n_test=1,
        models=("mlp",),
        log=fits.append,
        ceiling=True,
        ae_params={"min_steps": 5, "min_epochs": 1},
        dyn_params={"min_steps": 5, "min_epochs": 1, "n_members": 1},
    )
    assert set(errors) == {("mlp", "z"), ("mlp", "partial"), ("mlp", "z_all")}
    # Five optimiser steps may diverge (an infinite error); every run is scored.
    assert all(len(v) == 1 and not np.isnan(v[0]) for v in errors.values())
    assert all(len(v) == 1 and v[0] > 0 for v in seconds.values())
    # L_z on the budget sees one configuration in five; the ceiling all 300.
    ceiling = [m for m in fits if "L_z, all forces everywhere" in m]
    assert len(ceiling) == 1 and " 300 configurations" in ceiling[0]
    assert any("mlp L_z " in m and " 60 configurations" in m for m in fits)
