"""Tests of the Allen-Cahn system (paper Eq. 19-20, 44-45)."""

import json
import math
import pickle

import numpy as np
import pytest
import torch
from sklearn.pipeline import Pipeline

from skmacro import ClosureAutoencoder, PartialForceDynamics, simulate
from skmacro.metrics import greedy_ensemble, mean_relative_error, rollout_error
from skmacro.sampling import sample_partial_forces
from skmacro.systems import AllenCahn


def _energy(system, trajectories):
    """Free energy of every state of (..., n_features) float64 arrays."""
    X = np.asarray(trajectories, dtype=np.float64)
    flat = torch.from_numpy(X.reshape(-1, system.n_features))
    return system.observables(flat)[:, 0].numpy().reshape(X.shape[:-1])


@pytest.fixture(scope="module")
def rk4_48():
    """RK4 at 0.1 h^2 on 48 x 48 from two tori, through their vanishing."""
    system = AllenCahn(n_grid=48)
    X0 = system.initial_states([0.3, 0.4], [0.1, 0.15])
    t_end = 300 * system.h**2
    return system, X0, t_end, system.simulate(X0, t_end=t_end, dtype=np.float64)


# ------------------------------------------------------------------ the grid


def test_defaults_are_the_reference_experiments():
    system = AllenCahn()
    assert system.n_grid == 200 and system.particle_dim == 1
    assert system.n_particles == system.n_features == 40_000
    assert system.h == 1 / 200
    # Kim et al.'s eps_m with m = 10 grid cells: 10 h / (2 sqrt 2 atanh 0.9).
    assert math.isclose(system.eps, 0.012007, abs_tol=5e-7)
    np.testing.assert_allclose(system.grid, (np.arange(200) + 0.5) / 200)
    assert system.observable_names == ("free_energy",)
    assert AllenCahn(n_grid=50, epsilon=0.02).eps == 0.02


@pytest.mark.parametrize("k, l", [(1, 0), (1, 1), (3, 2), (7, 5)])
def test_neumann_laplacian_has_exact_cosine_eigenvectors(k, l):
    """cos(k pi x) cos(l pi y) at the cell centres is an eigenvector of the
    5-point Laplacian with reflecting (zero-Neumann) boundaries."""
    system = AllenCahn(n_grid=16)
    x, h = system.grid, system.h
    mode = np.outer(np.cos(k * np.pi * x), np.cos(l * np.pi * x)).reshape(1, -1)
    eigenvalue = -(4 / h**2) * (
        np.sin(k * np.pi * h / 2) ** 2 + np.sin(l * np.pi * h / 2) ** 2
    )
    np.testing.assert_allclose(
        system.laplacian(mode), eigenvalue * mode, rtol=0, atol=1e-10 * h**-2
    )


def test_neumann_laplacian_converges_at_second_order():
    errors = []
    for n in (16, 32, 64):
        system = AllenCahn(n_grid=n)
        x = system.grid
        v = np.outer(np.cos(np.pi * x), np.cos(2 * np.pi * x))
        exact = -5 * np.pi**2 * v
        errors.append(
            np.abs(system.laplacian(v.reshape(1, -1))[0] - exact.ravel()).max()
        )
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    np.testing.assert_allclose(orders, 2.0, atol=0.05)


def test_forces_match_a_hand_written_stencil_on_the_row_major_grid():
    n, eps = 4, 0.3
    system = AllenCahn(n_grid=n, epsilon=eps)
    X = np.random.default_rng(0).uniform(-1.2, 1.2, size=(2, n * n))
    X_copy = X.copy()
    expected = np.empty_like(X)
    for s in range(2):
        v = X[s].reshape(n, n)  # v[i, j] = v(x_i, y_j)
        for i in range(n):
            for j in range(n):
                neighbours = [
                    v[a, b]
                    for a, b in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1))
                    if 0 <= a < n and 0 <= b < n
                ]
                lap = (sum(neighbours) - len(neighbours) * v[i, j]) * n**2
                expected[s, i * n + j] = lap - (v[i, j] ** 3 - v[i, j]) / eps**2
    F = system.forces(X)
    assert F.dtype == np.float64
    np.testing.assert_allclose(F, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(X, X_copy)  # the input is left alone


# ------------------------------------------------------------------ partial forces


@pytest.mark.parametrize("n_grid", [1, 2, 9])
def test_partial_forces_equal_full_forces(n_grid):
    system = AllenCahn(n_grid=n_grid, epsilon=0.1)
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, size=(5, system.n_features))
    full = system.forces(X)
    everything = np.arange(system.n_particles)
    np.testing.assert_allclose(
        system.partial_forces(X, everything)[..., 0], full, rtol=1e-12, atol=1e-9
    )
    k = min(4, system.n_particles)
    per_row = np.stack([rng.permutation(system.n_particles)[:k] for _ in range(5)])
    out = system.partial_forces(X.astype(np.float32), per_row)
    assert out.shape == (5, k, 1) and out.dtype == np.float64
    expected = np.take_along_axis(system.forces(X.astype(np.float32)), per_row, axis=1)
    np.testing.assert_allclose(out[..., 0], expected, rtol=1e-12, atol=1e-9)


def test_partial_forces_never_evaluate_all_forces(monkeypatch):
    system = AllenCahn(n_grid=20)
    X = system.sample_initial(2, random_state=0)
    corners_and_edges = [0, 19, 380, 399, 10, 210, 209]
    expected = system.forces(X)[:, corners_and_edges]

    def forbidden(X):
        raise AssertionError("partial_forces must not evaluate all forces")

    monkeypatch.setattr(system, "forces", forbidden)
    out = system.partial_forces(X, corners_and_edges)
    np.testing.assert_allclose(out[..., 0], expected, rtol=1e-12, atol=1e-9)


def test_sample_partial_forces_at_the_papers_p():
    system = AllenCahn(n_grid=20)
    X = system.sample_initial(3, random_state=0)
    F = sample_partial_forces(system, X, p=1 / 25, random_state=0)
    observed = ~np.isnan(F)
    assert (observed.sum(axis=1) == 16).all()
    np.testing.assert_allclose(F[observed], system.forces(X)[observed], rtol=1e-12)


# ------------------------------------------------------------------ free energy


@pytest.mark.parametrize("n_grid", [1, 7, 16])
def test_free_energy_gradient_is_minus_h2_times_forces(n_grid):
    """The discrete dynamics is the exact L2 gradient flow of E_h."""
    system = AllenCahn(n_grid=n_grid)
    rng = np.random.default_rng(2)
    X = rng.uniform(-1.5, 1.5, size=(3, system.n_features))
    Xt = torch.tensor(X, requires_grad=True)
    system.observables(Xt).sum().backward()
    scale = np.abs(system.h**2 * system.forces(X)).max()
    np.testing.assert_allclose(
        Xt.grad.numpy(), -(system.h**2) * system.forces(X), rtol=0, atol=1e-13 * scale
    )


def test_free_energy_of_simple_states():
    system = AllenCahn(n_grid=10, epsilon=0.5)
    pure = -np.ones((1, 100))
    assert system.observables(pure).item() == 0.0  # v = -1: both terms vanish
    zero = np.zeros((1, 100))
    # F(0) = 1/4 on the unit area, no gradient.
    np.testing.assert_allclose(system.observables(zero).item(), 0.25 / 0.5**2)
    # A linear ramp v = x: every interior face in x contributes h^2 / 2.
    ramp = np.broadcast_to(system.grid[:, None], (10, 10)).reshape(1, -1)
    potential = np.sum((ramp**2 - 1) ** 2) / 4 / 0.5**2 * system.h**2
    np.testing.assert_allclose(
        system.observables(ramp).item(), potential + 0.5 * 90 * system.h**2
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_observables_keep_dtype_and_device(dtype):
    system = AllenCahn(n_grid=8)
    X = torch.as_tensor(system.sample_initial(4, random_state=0), dtype=dtype)
    z = system.observables(X)
    assert z.shape == (4, 1) and z.dtype == dtype and z.device == X.device
    reference = system.observables(X.double()).to(dtype)
    torch.testing.assert_close(z, reference)


def test_energy_decreases_as_eq_45_along_rk4(rk4_48):
    """dE/dt = -h^2 sum f^2 (Eq. 45), checked by central differences."""
    system, X0, _, _ = rk4_48
    dt = 0.02 * system.h**2  # small enough for central differences at 1e-4
    traj = system.simulate(X0[:1], t_end=40 * dt, dt=dt, stride=1, dtype=np.float64)[0]
    E = _energy(system, traj)
    dissipation = -(system.h**2) * np.sum(system.forces(traj) ** 2, axis=1)
    np.testing.assert_allclose(
        (E[2:] - E[:-2]) / (2 * dt), dissipation[1:-1], rtol=1e-4
    )


@pytest.mark.parametrize("method", ["rk4", "strang"])
def test_free_energy_never_increases(rk4_48, method):
    system, X0, t_end, reference = rk4_48
    if method == "rk4":
        traj = reference
    else:
        traj = system.simulate(X0, t_end=t_end, method=method, stride=5)
    E = _energy(system, traj)
    assert np.all(np.diff(E, axis=1) <= 1e-9 * E[:, :1])
    assert E[:, 0].min() > 10 and E[:, -1].max() < 1e-6  # the tori vanished
    assert np.abs(traj[:, -1] + 1).max() < 1e-4  # and v = -1 everywhere


# ------------------------------------------------------------------ initial states


@pytest.mark.parametrize("r1, r2", [(0.3, 0.1), (0.4, 0.15), (0.3517, 0.1234)])
def test_torus_level_sets_are_the_two_radii(r1, r2):
    system = AllenCahn()
    v = system.initial_states(r1, r2).reshape(200, 200)
    # The grid row nearest the centre: y = 0.5 + h/2; locate v = 0 along x
    # by linear interpolation between sign changes.
    row, y = v[:, 100], system.grid[100]
    change = np.nonzero(np.sign(row[:-1]) != np.sign(row[1:]))[0]
    assert len(change) == 4  # -1 | +1 ring | -1 hole | +1 ring | -1
    x = system.grid
    x0 = x[change] - row[change] * (x[change + 1] - x[change]) / (
        row[change + 1] - row[change]
    )
    radii = np.hypot(x0 - 0.5, y - 0.5)
    np.testing.assert_allclose(radii, [r1, r2, r2, r1], atol=2e-4)
    assert v.max() <= 1 and v.min() >= -1 - 1e-12
    assert v[100, 100] < -0.99 and v[0, 0] < -0.99  # centre and corner: -1
    ring = np.hypot(x[:, None] - 0.5, x[None, :] - 0.5)
    assert v[np.abs(ring - (r1 + r2) / 2) < 0.01].min() > 0.99


def test_sample_initial_draws_radii_like_the_reference_code():
    system = AllenCahn(n_grid=16)
    radii = system.sample_radii(500, random_state=0)
    assert radii.shape == (500, 2)
    assert radii[:, 0].min() >= 0.3 and radii[:, 0].max() <= 0.4
    assert radii[:, 1].min() >= 0.1 and radii[:, 1].max() <= 0.15
    rng = np.random.RandomState(0)  # outer radii first, then inner
    np.testing.assert_array_equal(radii[:, 0], rng.uniform(0.3, 0.4, 500))
    np.testing.assert_array_equal(radii[:, 1], rng.uniform(0.1, 0.15, 500))
    X0 = system.sample_initial(5, random_state=3)
    r = system.sample_radii(5, random_state=3)
    np.testing.assert_array_equal(X0, system.initial_states(r[:, 0], r[:, 1]))
    assert system.sample_initial(0).shape == (0, 256)


# ------------------------------------------------------------------ simulation


def test_default_stride_keeps_the_reference_snapshot_spacing(rk4_48):
    system, X0, t_end, traj = rk4_48
    # RK4 at 0.1 h^2, every 100th step: 3000 steps -> 31 states.
    assert traj.shape == (2, 31, system.n_features) and traj.dtype == np.float64
    np.testing.assert_array_equal(traj[:, 0], X0)
    fast = system.simulate(X0, t_end=t_end, method="strang")
    assert fast.shape == traj.shape and fast.dtype == np.float32
    thinned = system.simulate(X0[:1], t_end=10 * system.h**2, stride=25)
    assert thinned.shape == (1, 5, system.n_features)


def test_strang_matches_rk4_to_second_order(rk4_48):
    """The fast split scheme approximates the same semi-discrete system: at
    its default step (h^2) the stored states agree with RK4 at 0.1 h^2, and
    halving the step divides the error by four."""
    system, X0, t_end, reference = rk4_48
    E_ref = _energy(system, reference)
    errors = []
    for dt in (None, 0.5 * system.h**2):
        traj = system.simulate(
            X0, t_end=t_end, dt=dt, method="strang", dtype=np.float64
        )
        errors.append(np.abs(traj - reference).max())
        dE = np.abs(_energy(system, traj) - E_ref) / E_ref[:, :1]
        assert dE.max() < (1e-3 if dt is None else 3e-4)
    assert errors[0] < 5e-3
    assert 3.5 < errors[0] / errors[1] < 4.5


def _rk4_by_hand(system, X0, dt, n_steps, stride):
    x, kept = np.array(X0, dtype=np.float64), [X0]
    f = system.forces
    for step in range(1, n_steps + 1):
        k1 = f(x)
        k2 = f(x + 0.5 * dt * k1)
        k3 = f(x + 0.5 * dt * k2)
        k4 = f(x + dt * k3)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if step % stride == 0:
            kept.append(x)
    return np.stack(kept, axis=1)


@pytest.mark.parametrize("method", ["rk4", "strang"])
def test_float32_storage_is_the_float64_run_rounded(method):
    """States stored in float32 are the float64 integration's, rounded, also
    while the run settles on the pure phase v = -1."""
    system = AllenCahn(n_grid=16)
    X0 = -1 + 1e-4 * np.random.default_rng(0).uniform(size=(2, 256))
    # About halfway through, every value is within float32's resolution of -1.
    if method == "rk4":
        dt, n_steps, stride = 0.1 * system.h**2, 400, 4
        reference = _rk4_by_hand(system, X0, dt, n_steps, stride)
    else:
        dt, n_steps, stride = system.h**2, 50, 1
    kwargs = dict(t_end=n_steps * dt, dt=dt, method=method, stride=stride)
    if method == "strang":
        reference = system.simulate(X0, dtype=np.float64, **kwargs)
    stored = system.simulate(X0, **kwargs)
    assert stored.dtype == np.float32
    np.testing.assert_allclose(stored, reference.astype(np.float32), rtol=0, atol=0)
    settled = (stored == -1).all(axis=2)
    assert settled[:, -1].all() and not settled[:, :10].any()


def test_strang_keeps_values_in_the_unit_interval():
    system = AllenCahn(n_grid=24)
    X0 = np.random.default_rng(0).uniform(-1, 1, size=(1, 576))
    traj = system.simulate(X0, t_end=100 * system.h**2, method="strang", stride=10)
    assert np.abs(traj).max() <= 1.0 + 1e-6


def test_explicit_steps_beyond_the_stability_limit_are_refused():
    system = AllenCahn(n_grid=32)
    X0 = system.sample_initial(1, random_state=0)
    h2 = system.h**2
    # The paper's printed dt = 1/N = h^2 is outside RK4's stability region.
    with pytest.raises(ValueError, match="stability region.*method='strang'"):
        system.simulate(X0, t_end=10 * h2, dt=h2)
    with pytest.raises(ValueError, match="stability region"):
        system.simulate(X0, t_end=3 * h2, dt=0.3 * h2, method="euler")
    # Just inside the limit RK4 stays bounded from a rough state.
    stiffest = 8 / h2 + 2 / system.eps**2
    dt = 0.97 * 2.785 / stiffest
    rough = np.random.default_rng(0).uniform(-1, 1, size=(1, 1024))
    traj = system.simulate(rough, t_end=300 * dt, dt=dt, stride=300)
    assert np.abs(traj).max() <= 1.0 + 1e-6


def test_trajectories_stream_into_out_one_at_a_time(tmp_path):
    system = AllenCahn(n_grid=12)
    X0 = system.sample_initial(3, random_state=0)
    t_end = 20 * system.h**2
    expected = system.simulate(X0, t_end=t_end, method="strang")

    class Recorder:
        """A minimal array-like: only ``shape`` and ``out[i] = trajectory``."""

        shape = expected.shape

        def __init__(self):
            self.rows = {}

        def __setitem__(self, i, trajectory):
            self.rows[i] = np.array(trajectory)

    recorder = Recorder()
    assert system.simulate(X0, t_end=t_end, method="strang", out=recorder) is recorder
    assert sorted(recorder.rows) == [0, 1, 2]
    for i in range(3):
        assert recorder.rows[i].shape == expected.shape[1:]
        np.testing.assert_array_equal(recorder.rows[i], expected[i])

    path = tmp_path / "traj.f64"
    memmap = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.float64, shape=expected.shape
    )
    result = system.simulate(X0, t_end=t_end, method="strang", out=memmap, n_jobs=2)
    assert result is memmap
    del memmap, result
    stored = np.load(path)
    assert stored.dtype == np.float64  # out's dtype, not the float32 default
    np.testing.assert_allclose(stored, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["zarr", "h5py"])
def test_simulate_and_filter_through_chunked_stores(kind, tmp_path, request):
    system = AllenCahn(n_grid=16)
    X0 = system.sample_initial(2, random_state=0)
    kwargs = dict(t_end=300 * system.h**2, method="strang")
    expected = system.simulate(X0, **kwargs)
    if kind == "zarr":
        zarr = pytest.importorskip("zarr")
        out = zarr.zeros(
            shape=expected.shape, chunks=(1, 8, 256), dtype="f4", store=tmp_path
        )
    else:
        h5py = pytest.importorskip("h5py")
        store = h5py.File(tmp_path / "traj.h5", "w")
        request.addfinalizer(store.close)
        out = store.create_dataset("X", shape=expected.shape, dtype="f4")
    assert system.simulate(X0, out=out, **kwargs) is out
    np.testing.assert_array_equal(out[:], expected)
    np.testing.assert_array_equal(
        system.active_snapshots(out, chunk_size=5), system.active_snapshots(expected)
    )


def test_progress_bar_when_verbose(capsys):
    system = AllenCahn(n_grid=8)
    X0 = system.sample_initial(2, random_state=0)
    system.simulate(X0, t_end=10 * system.h**2, method="strang", verbose=True)
    assert "2/2" in capsys.readouterr().err


# ------------------------------------------------------------------ snapshot filter


def test_active_snapshots_drop_the_equilibrium(rk4_48, tmp_path):
    system, _, _, traj = rk4_48
    E = _energy(system, traj)
    mask = system.active_snapshots(traj)
    assert mask.shape == (2, 31) and mask.dtype == bool
    np.testing.assert_array_equal(mask, E > 1e-4)
    # The torus vanishes once: a run of active snapshots, then none.
    for row in mask:
        n_active = row.sum()
        assert 0 < n_active < len(row) and row[:n_active].all()
    assert np.abs(traj[~mask] + 1).max() < 1e-2
    # Read in chunks from disk, one trajectory or all, whatever the chunk size.
    path = tmp_path / "traj.f32"
    np.save(path, traj.astype(np.float32))
    on_disk = np.load(str(path) + ".npy", mmap_mode="r")
    np.testing.assert_array_equal(system.active_snapshots(on_disk, chunk_size=4), mask)
    np.testing.assert_array_equal(
        system.active_snapshots(on_disk[1], chunk_size=1), mask[1]
    )
    loose = system.active_snapshots(traj, threshold=1.0)
    assert loose.sum() < mask.sum() and not (loose & ~mask).any()


# ------------------------------------------------------------------ errors, pickling


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_grid": 0}, "n_grid"),
        ({"n_grid": 2.5}, "n_grid"),
        ({"n_grid": True}, "n_grid"),
        ({"epsilon": -0.1}, "epsilon must"),
        ({"epsilon": float("nan")}, "epsilon must"),
        ({"epsilon": "0.01"}, "epsilon must"),
        ({"outer_radius_range": (0.4, 0.3)}, "outer_radius_range"),
        ({"inner_radius_range": 0.1}, "inner_radius_range"),
        ({"inner_radius_range": (0.1, 0.35)}, "must lie below"),
    ],
)
def test_bad_constructor_arguments_raise_on_use(kwargs, match):
    system = AllenCahn(**kwargs)  # __init__ only stores
    with pytest.raises(ValueError, match=match):
        system.sample_initial(1)


def test_bad_simulate_arguments_raise_clear_errors():
    system = AllenCahn(n_grid=8)
    X0 = system.sample_initial(2, random_state=0)
    h2 = system.h**2
    cases = [
        (dict(method="strnag"), "did you mean 'strang'"),
        (dict(dt=-1.0), "dt must"),
        (dict(dt="small"), "dt must"),
        (dict(t_end=float("nan")), "t_end must"),
        (dict(t_end=15.5 * h2), "whole number of steps"),
        (dict(stride=0), "stride must"),
        (dict(stride=2.0), "stride must"),
        (dict(t_end=3 * h2, dt=0.3 * h2), "pass stride explicitly"),
        (dict(dtype=np.int32), "dtype must"),
        (dict(dtype="not a dtype"), "dtype must"),
        (dict(out=np.empty((2, 3, 64))), r"out must have shape \(2, 2, 64\)"),
        (dict(out=np.empty((2, 2, 64), dtype=int)), "out.dtype must"),
    ]
    for kwargs, match in cases:
        kwargs = {"t_end": 10 * h2, "method": "strang", **kwargs}
        with pytest.raises(ValueError, match=match):
            system.simulate(X0, **kwargs)
    with pytest.raises(ValueError, match=r"X0 must have shape \(n_samples, 64\)"):
        system.simulate(np.zeros((2, 63)), t_end=10 * h2)


def test_bad_states_radii_and_particles_are_rejected():
    system = AllenCahn(n_grid=3)
    X = np.zeros((2, 9))
    with pytest.raises(ValueError, match=r"shape \(n_samples, 9\)"):
        system.forces(np.zeros((2, 8)))
    with pytest.raises(ValueError, match=r"shape \(n_samples, 9\)"):
        system.observables(torch.zeros(2, 10))
    X[1, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        system.partial_forces(X, [0])
    with pytest.raises(TypeError, match="integer"):
        system.partial_forces(np.zeros((2, 9)), [0.0])
    with pytest.raises(ValueError, match=r"\[0, 9\)"):
        system.partial_forces(np.zeros((2, 9)), [9])
    with pytest.raises(ValueError, match="0 < r2 < r1"):
        system.initial_states(0.2, 0.3)
    with pytest.raises(ValueError, match="same length"):
        system.initial_states([0.3, 0.4], [0.1])
    with pytest.raises(ValueError, match="n must"):
        system.sample_initial(-1)
    with pytest.raises(ValueError, match="threshold"):
        system.active_snapshots(np.zeros((3, 9)), threshold=None)
    with pytest.raises(ValueError, match="chunk_size"):
        system.active_snapshots(np.zeros((3, 9)), chunk_size=0)
    with pytest.raises(ValueError, match="trajectories must have shape"):
        system.active_snapshots(np.zeros(9))


def test_system_and_bound_observables_pickle():
    system = AllenCahn(n_grid=6, epsilon=0.1, inner_radius_range=(0.1, 0.2))
    clone = pickle.loads(pickle.dumps(system))
    assert repr(clone) == repr(system)
    observables = pickle.loads(pickle.dumps(system.observables))
    X = torch.linspace(-1, 1, 72, dtype=torch.float64).reshape(2, 36)
    torch.testing.assert_close(observables(X), system.observables(X))


# ------------------------------------------------------------------ end to end


def test_pipeline_fits_on_a_tiny_grid():
    system = AllenCahn(n_grid=32)
    X0 = system.sample_initial(3, random_state=0)
    traj = system.simulate(X0, t_end=50 * system.h**2, method="strang", stride=5)
    X = traj[system.active_snapshots(traj)]
    F = sample_partial_forces(system, X, p=1 / 25, random_state=0)
    pipe = Pipeline(
        [
            (
                "ae",
                ClosureAutoencoder(
                    observables=system.observables, n_components=4, max_epochs=2
                ),
            ),
            ("dyn", PartialForceDynamics(max_epochs=3)),
        ]
    ).fit(X, F)
    Z = pipe[0].transform(X)
    assert Z.shape == (len(X), 4)
    np.testing.assert_allclose(
        Z[:, 0], _energy(system, X), rtol=1e-4, atol=1e-4 * _energy(system, X).max()
    )
    assert np.all(np.isfinite(pipe.predict(X)))
    assert np.isfinite(pipe.score(X, F))


# ------------------------------------------------------------------ the experiment


def test_experiment_runs_both_losses_on_one_budget_and_meters_its_phases():
    from skmacro.experiments import allen_cahn as ac
    from skmacro.experiments.resources import PhaseMeter

    system = ac.default_system(24)
    t, train, test = ac.make_data(
        system, 3, 1, t_end=60 * system.h**2, log=lambda message: None
    )
    meter = PhaseMeter(log=None)
    run = ac.free_energy_comparison(
        system,
        t,
        train,
        test,
        latent_dim=3,
        ae_params={"max_epochs": 2},
        dyn_params={"max_epochs": 2, "n_members": 1, "validation_fraction": None},
        autoencoder_stride=2,
        log=lambda message: None,
        meter=meter,
    )
    partial, z = run["results"]["partial"], run["results"]["z"]
    assert partial.n_configurations == run["n_configurations"]
    # The autoencoder saw every second active snapshot, the dynamics all.
    encoder = run["encoder"]
    valid = encoder.validation_rows_
    fitted = len(encoder.train_rows_) + (0 if valid is None else len(valid))
    assert fitted == -(-run["n_configurations"] // 2)
    # Equal force budget: L_z's full-force rows cost what L_x,p's 1/25 does.
    assert abs(z.force_computations - partial.force_computations) <= system.n_features
    # Two epochs: a rollout may diverge (an infinite error), but both are scored.
    assert partial.error >= 0 and z.error >= 0
    # One member: its own error, on the same active snapshots, is the error.
    np.testing.assert_array_equal(partial.member_errors, [partial.error])
    # The rollouts integrate at the reference's step, 0.1 h^2.
    _, _, Z_pred = rollout_error(partial.pipeline, t, test, dt=0.1 * system.h**2)
    np.testing.assert_allclose(partial.Z_pred, Z_pred)
    # The reference's OnsagerNet has its external force on.
    assert partial.pipeline[-1].module_.field.member(0).force_net is not None
    assert [row["phase"] for row in meter.rows] == [
        "autoencoder fit",
        "partial forces (p = 0.04)",
        "all forces of the L_z rows",
        "partial: dynamics fit, rollouts",
        "z: dynamics fit, rollouts",
    ]


@pytest.mark.parametrize("stride", [0, 1.5, "2"])
def test_experiment_rejects_a_bad_autoencoder_stride(stride):
    from skmacro.experiments import allen_cahn as ac

    system = ac.default_system(8)
    states = np.zeros((1, 2, system.n_features), dtype=np.float32)
    with pytest.raises((ValueError, TypeError), match="autoencoder_stride"):
        ac.free_energy_comparison(
            system, np.arange(2.0), states, states, autoencoder_stride=stride
        )


def test_experiment_pools_the_members_of_several_encoders():
    from skmacro.experiments import allen_cahn as ac

    system = ac.default_system(24)
    t, train, test = ac.make_data(
        system, 4, 2, t_end=60 * system.h**2, log=lambda message: None
    )
    run = ac.free_energy_comparison(
        system,
        t,
        train,
        test,
        latent_dim=3,
        latent_model="mlp",
        ae_params={"max_epochs": 2},
        dyn_params={"max_epochs": 2, "n_members": 2, "validation_fraction": None},
        n_encoders=2,
        selection_trajectories=3,
        log=lambda message: None,
    )
    encoders = run["encoders"]
    assert len(encoders) == 2 and run["encoder"] is encoders[0]
    assert encoders[1].random_state == encoders[0].random_state + 1
    mask = system.active_snapshots(test)
    for name in ("partial", "z"):
        pooled, single = run["pooled"][name], run["results"][name]
        assert pooled.candidates == [(0, 0), (0, 1), (1, 0), (1, 1)]
        assert single.pipeline[0] is encoders[0]
        # The chosen members are a best prefix of the greedy order on three of
        # the training trajectories (the first, a middle and the last one).
        picked = train[[0, 2, 3]]
        dt = 0.1 * system.h**2
        on_picked = [
            rollout_error(pipe, t, picked, dt=dt, return_members=True)
            for pipe in pooled.pipelines
        ]
        Z_true = on_picked[0][1][..., :1]
        rollouts = np.stack([on_picked[e][3][m, ..., :1] for e, m in pooled.candidates])
        order, errors = greedy_ensemble(
            Z_true, rollouts, mask=system.active_snapshots(picked)
        )
        np.testing.assert_allclose(pooled.selection_errors, errors, rtol=1e-6)
        n_chosen = int(np.argmin(errors)) + 1
        assert pooled.members == [pooled.candidates[i] for i in order[:n_chosen]]
        # Its score is the chosen members' mean test rollout on the active
        # snapshots; the first encoder's ensemble is the ordinary result.
        test_members = np.concatenate(
            [
                rollout_error(pipe, t, test, dt=dt, return_members=True)[3]
                for pipe in pooled.pipelines
            ]
        )[..., :1]
        np.testing.assert_allclose(
            pooled.Z_pred, test_members[order[:n_chosen]].mean(axis=0), rtol=1e-6
        )
        assert pooled.error == pytest.approx(
            mean_relative_error(pooled.Z_true, pooled.Z_pred, squared=False, mask=mask)
        )
        assert pooled.pipelines[0] is single.pipeline
        np.testing.assert_array_equal(pooled.member_errors[:2], single.member_errors)
    with pytest.raises(ValueError, match="n_encoders"):
        ac.free_energy_comparison(system, t, train, test, n_encoders=0)


def test_experiment_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    from skmacro.experiments import allen_cahn as ac

    system = ac.default_system(24)
    t, train, test = ac.make_data(
        system, 4, 2, t_end=60 * system.h**2, log=lambda message: None
    )
    fits = []

    def counted(function, name):
        def wrapper(*args, **kwargs):
            fits.append(name)
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(ac, "compare_losses", counted(ac.compare_losses, "latent"))
    monkeypatch.setattr(
        ac.ClosureAutoencoder,
        "fit",
        counted(ac.ClosureAutoencoder.fit, "autoencoder"),
    )

    def run(**options):
        fits.clear()
        return ac.free_energy_comparison(
            system,
            t,
            train,
            test,
            **{
                "latent_dim": 3,
                "latent_model": "mlp",
                "ae_params": {"max_epochs": 2},
                "dyn_params": {
                    "max_epochs": 2,
                    "n_members": 2,
                    "validation_fraction": None,
                },
                "selection_trajectories": 3,
                "checkpoint": tmp_path / "fits",
                "log": lambda message: None,
                **options,
            },
        )

    first = run()
    assert fits == ["autoencoder", "latent", "latent"]
    # Two encoders, killed in the rollouts after the second encoder's L_x,p
    # fit: that fit is kept, and the rerun fits only the second L_z.
    rollouts = []

    def killed_at_the_third(*args, **kwargs):
        rollouts.append(1)
        if len(rollouts) == 3:
            raise KeyboardInterrupt
        return simulate(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(ac, "simulate", killed_at_the_third)
        with pytest.raises(KeyboardInterrupt):
            run(n_encoders=2)
    assert fits == ["autoencoder", "latent"]
    second = run(n_encoders=2)
    assert fits == ["latent"]
    for name in ("partial", "z"):
        single = second["results"][name]
        assert single.error == first["results"][name].error
        assert single.pipeline[0] is second["encoders"][0]
        np.testing.assert_array_equal(
            single.Z_members, first["results"][name].Z_members
        )
    # Everything saved: nothing is fitted or rolled out again.
    again = run(n_encoders=2)
    assert fits == []
    for name in ("partial", "z"):
        assert again["pooled"][name].members == second["pooled"][name].members
        assert again["pooled"][name].error == second["pooled"][name].error
        np.testing.assert_array_equal(
            again["pooled"][name].selection_errors,
            second["pooled"][name].selection_errors,
        )
    assert not list((tmp_path / "fits").glob("*.partial"))
    with pytest.raises(ValueError, match="checkpoint.*latent_dim"):
        run(latent_dim=4)
    with pytest.raises(TypeError, match="checkpoint must be a folder path"):
        run(checkpoint=5)
    # Other data with the same active snapshots are another run too.
    with pytest.raises(ValueError, match="checkpoint.*train_starts"):
        ac.free_energy_comparison(
            system, t, train[::-1], test, latent_dim=3, checkpoint=tmp_path / "fits"
        )
    # A folder written before the first states were recorded takes them.
    path = tmp_path / "fits" / "settings.json"
    record = json.loads(path.read_text())
    del record["train_starts"], record["test_starts"]
    path.write_text(json.dumps(record))
    run(n_encoders=2)
    assert fits == [] and "train_starts" in json.loads(path.read_text())
