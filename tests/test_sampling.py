"""Tests of Algorithm 1 (partial force sampling) and of ``observed_mask``."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from skmacro import sampling
from skmacro.forces import PartialForces
from skmacro.sampling import observed_mask, sample_partial_forces
from skmacro.systems import System
from skmacro.systems.predator_prey import PredatorPrey


class _Pairs(System):
    """A toy system with two coordinates per particle, f(x) = x**2 + x."""

    particle_dim = 2
    observable_names = ("x_mean",)

    def __init__(self, n_particles=5):
        self.n_particles = n_particles

    def observables(self, X):
        return X.mean(1, keepdim=True)

    def forces(self, X):
        X = self.check_states(X)
        return X**2 + X

    def partial_forces(self, X, particles):
        X = self.check_states(X)
        idx = self.check_particles(particles, len(X))
        cols = idx[..., None] * 2 + np.arange(2)
        x = np.take_along_axis(X[:, None, :], cols, axis=2)
        return x**2 + x

    def sample_initial(self, n, random_state=None):
        return np.random.default_rng(random_state).normal(size=(n, 10))


class _FreePairs(_Pairs):
    """``_Pairs`` whose first coordinate's derivative needs no force
    evaluation."""

    free_coordinates = (0,)

    def free_forces(self, X):
        X = self.check_states(X)
        first = X.reshape(len(X), self.n_particles, 2)[..., :1]
        return first**2 + first


@pytest.fixture(scope="module")
def pp_data():
    system = PredatorPrey()
    X = system.sample_initial(30, random_state=0)
    return system, X, system.forces(X)


@pytest.mark.parametrize("p, k", [(0.2, 20), (0.25, 25), (1 / 3, 33), (1.0, 100)])
def test_exact_count_without_replacement(pp_data, p, k):
    system, X, _ = pp_data
    F, mask = sample_partial_forces(system, X, p, random_state=0, return_mask=True)
    assert F.shape == (30, 100) and mask.shape == (30, 100) and mask.dtype == bool
    np.testing.assert_array_equal(mask.sum(1), k)
    np.testing.assert_array_equal(~np.isnan(F), mask)
    S, sparse_mask = sample_partial_forces(
        system, X, p, random_state=0, format="sparse", return_mask=True
    )
    # Without replacement: k distinct, sorted column indices per row.
    for row in range(30):
        cols = S.indices[S.indptr[row] : S.indptr[row + 1]]
        assert len(cols) == k and np.all(np.diff(cols) > 0)
    np.testing.assert_array_equal(sparse_mask, mask)


def test_every_particle_has_inclusion_probability_p():
    system = PredatorPrey(n_cells=10)
    X = np.full((20000, 20), 0.5)
    _, mask = sample_partial_forces(system, X, 0.25, random_state=1, return_mask=True)
    counts = mask.sum(0)
    K, p = len(X), 0.25
    # Each count is Binomial(K, p); a 5-sigma band fails with probability ~1e-5.
    assert np.all(np.abs(counts - K * p) < 5 * np.sqrt(K * p * (1 - p)))
    # Pairwise inclusion of a fixed-size uniform draw: k(k-1) / (n(n-1)).
    both = (mask[:, 0] & mask[:, 7]).mean()
    assert abs(both - 5 * 4 / (20 * 19)) < 5 * np.sqrt(0.0526 / K)


@pytest.mark.parametrize("fmt", ["dense", "sparse"])
def test_partial_forces_equal_full_forces(pp_data, fmt):
    system, X, full = pp_data
    F = sample_partial_forces(system, X, 0.3, random_state=2, format=fmt)
    mask = observed_mask(F, n_particles=100)
    values = F.toarray() if fmt == "sparse" else F
    np.testing.assert_allclose(values[mask], full[mask], rtol=1e-14)
    if fmt == "sparse":
        assert isinstance(F, sp.csr_array) and F.has_canonical_format
        assert F.dtype == np.float64 and F.nnz == 30 * 30
        # int32 column indices: 12 bytes per stored force, not 16.
        assert F.indices.dtype == F.indptr.dtype == np.int32


def test_computed_zero_forces_stay_stored():
    system = PredatorPrey(n_cells=4)
    # u = 0 everywhere: every prey force is exactly zero (D = 0).
    X = np.concatenate([np.zeros((3, 4)), np.full((3, 4), 0.5)], axis=1)
    S = sample_partial_forces(system, X, 1.0, random_state=0, format="sparse")
    assert S.nnz == 24 and np.count_nonzero(S.data) == 12
    np.testing.assert_array_equal(observed_mask(S), np.ones((3, 8), bool))
    S = sample_partial_forces(system, X, 0.5, random_state=0, format="sparse")
    assert S.nnz == 12
    np.testing.assert_array_equal(np.diff(S.indptr), 4)


def test_sampling_never_evaluates_all_forces(pp_data, monkeypatch):
    system, X, full = pp_data
    system = PredatorPrey()

    def forbidden(X):
        raise AssertionError("Algorithm 1 must not evaluate all forces")

    monkeypatch.setattr(system, "forces", forbidden)
    F = sample_partial_forces(system, X, 0.1, random_state=0)
    assert np.count_nonzero(~np.isnan(F)) == 300


def test_chunking_and_seeding_do_not_change_the_draw(pp_data, monkeypatch):
    system, X, _ = pp_data
    whole = sample_partial_forces(system, X, 0.2, random_state=3)
    np.testing.assert_array_equal(
        whole, sample_partial_forces(system, X, 0.2, random_state=3)
    )
    monkeypatch.setattr(sampling, "SAMPLING_BUDGET", 250)  # 2 rows per chunk
    np.testing.assert_array_equal(
        whole, sample_partial_forces(system, X, 0.2, random_state=3)
    )
    other = sample_partial_forces(system, X, 0.2, random_state=4)
    assert not np.array_equal(np.isnan(whole), np.isnan(other))


@pytest.mark.parametrize("fmt", ["dense", "sparse"])
def test_multi_coordinate_particles_are_computed_together(fmt):
    system = _Pairs()
    X = system.sample_initial(50, random_state=0)
    F, mask = sample_partial_forces(
        system, X, 0.4, random_state=0, format=fmt, return_mask=True
    )
    coords = observed_mask(F, n_particles=5, particle_dim=2)
    np.testing.assert_array_equal(coords, np.repeat(mask, 2, axis=1))
    np.testing.assert_array_equal(mask.sum(1), 2)
    values = F.toarray() if fmt == "sparse" else F
    np.testing.assert_allclose(values[coords], system.forces(X)[coords])


def _sample_with_free_coordinates(system, X, fmt="dense"):
    """Forces on 40% of the particles plus every free coordinate, with the
    mask and the inclusion probabilities."""
    return sample_partial_forces(
        system,
        X,
        0.4,
        random_state=1,
        format=fmt,
        return_mask=True,
        free_coordinates=True,
        return_inclusion_proba=True,
    )


@pytest.mark.parametrize("fmt", ["dense", "sparse"])
def test_free_coordinates_are_recorded_for_every_particle(fmt, monkeypatch):
    system = _FreePairs()
    X = system.sample_initial(60, random_state=0)
    F, mask, proba = _sample_with_free_coordinates(system, X, fmt)
    plain, particles = sample_partial_forces(
        system, X, 0.4, random_state=1, format=fmt, return_mask=True
    )
    # The same particles are sampled, and every particle's first coordinate
    # is added.
    expected = np.repeat(particles, 2, axis=1)
    expected[:, 0::2] = True
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(observed_mask(F), mask)
    with pytest.raises(ValueError, match="free coordinates.*particle_dim=1"):
        observed_mask(F, n_particles=5, particle_dim=2)
    values = F.toarray() if fmt == "sparse" else F
    np.testing.assert_allclose(values[mask], system.forces(X)[mask], rtol=1e-14)
    np.testing.assert_array_equal(proba, np.tile([1.0, 0.4], 5))
    # Horvitz-Thompson weights: 1 on the free coordinates, 1/p on the others
    # where computed, so every coordinate's weight has expectation 1.
    f, w = PartialForces(F, 10, inclusion_proba=proba).chunk(slice(None))
    np.testing.assert_array_equal(w[:, 0::2], 1.0)
    np.testing.assert_array_equal(w[:, 1::2], np.where(particles, 2.5, 0.0))
    monkeypatch.setattr(sampling, "SAMPLING_BUDGET", 30)  # 3 rows per chunk
    chunked = sample_partial_forces(
        system, X, 0.4, random_state=1, format=fmt, free_coordinates=True
    )
    np.testing.assert_array_equal(
        chunked.toarray() if fmt == "sparse" else chunked, values
    )


def test_inferred_p_warns_when_coordinates_are_always_observed():
    system = _FreePairs()
    X = system.sample_initial(60, random_state=0)
    F, mask, proba = _sample_with_free_coordinates(system, X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PartialForces(F, 10, inclusion_proba=proba)
    # Without them, the observed fraction (0.7) would weight the free
    # coordinates as 1/0.7: the always-observed columns give that away.
    with pytest.warns(UserWarning, match="computed in all 60 configurations"):
        PartialForces(F, 10)
    with pytest.warns(UserWarning, match=r"first: \[0, 2, 4, 6, 8\]"):
        PartialForces(np.nan_to_num(F), 10, mask=mask)
    # Nearly complete forces: columns computed everywhere are what p predicts.
    nearly = system.forces(X)
    nearly[3, 4] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert PartialForces(nearly, 10).p == pytest.approx(1 - 1 / 600)


def test_free_coordinates_need_a_system_that_has_them(pp_data):
    system, X, _ = pp_data
    with pytest.raises(ValueError, match="PredatorPrey has no free coordinates"):
        sample_partial_forces(system, X, 0.2, free_coordinates=True)
    with pytest.raises(TypeError, match="free_coordinates must be True or False"):
        sample_partial_forces(system, X, 0.2, free_coordinates="velocities")
    proba = sample_partial_forces(system, X, 0.2, return_inclusion_proba=True)[1]
    np.testing.assert_array_equal(proba, np.full(100, 0.2))

    class Undeclared(_Pairs):
        free_coordinates = (1,)

    with pytest.raises(NotImplementedError, match="does not implement free_forces"):
        sample_partial_forces(Undeclared(), X[:, :10], 0.2, free_coordinates=True)

    class OutOfRange(_FreePairs):
        free_coordinates = (0, 2)

    with pytest.raises(ValueError, match=r"distinct indices in range\(2\)"):
        sample_partial_forces(OutOfRange(), X[:, :10], 0.2, free_coordinates=True)
    assert _Pairs().free_forces(X[:3, :10]).shape == (3, 5, 0)


def test_empty_input_gives_empty_output():
    system = PredatorPrey(n_cells=3)
    F, mask = sample_partial_forces(system, np.zeros((0, 6)), 0.5, return_mask=True)
    assert F.shape == (0, 6) and mask.shape == (0, 6)
    assert (
        sample_partial_forces(system, np.zeros((0, 6)), 0.5, format="sparse").nnz == 0
    )


@pytest.mark.parametrize("p", [0, -0.1, 1.5, np.nan, np.inf, True, "0.2", None])
def test_p_outside_unit_interval_is_rejected(pp_data, p):
    system, X, _ = pp_data
    with pytest.raises(ValueError, match=r"p must be a real number in \(0, 1\]"):
        sample_partial_forces(system, X, p)


def test_p_selecting_no_particle_suggests_smallest_valid_p(pp_data):
    system, X, _ = pp_data
    with pytest.raises(ValueError, match=r"p >= 1/100 = 0\.01"):
        sample_partial_forces(system, X, 0.004)


def test_bad_format_and_states_are_rejected(pp_data):
    system, X, _ = pp_data
    with pytest.raises(ValueError, match="did you mean 'sparse'"):
        sample_partial_forces(system, X, 0.2, format="sprase")
    with pytest.raises(ValueError, match="not one of"):
        sample_partial_forces(system, X, 0.2, format="sparse_matrix")
    bad = X.copy()
    bad[3, 7] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        sample_partial_forces(system, bad, 0.2)
    with pytest.raises(ValueError, match=r"shape \(n_samples, 100\)"):
        sample_partial_forces(system, X[:, :99], 0.2)


def test_observed_mask_dense_and_sparse_inputs():
    dense = np.array([[0.0, np.nan, 2.0], [np.nan, np.nan, -1.0]])
    expected = ~np.isnan(dense)
    np.testing.assert_array_equal(observed_mask(dense), expected)
    rows, cols = np.nonzero(expected)
    data = np.array([0.0, 2.0, -1.0])  # the explicit zero counts as observed
    for make in (sp.csr_array, sp.csr_matrix, sp.coo_array):
        F = make((data, (rows, cols)), shape=(2, 3))
        np.testing.assert_array_equal(observed_mask(F), expected)


def test_observed_mask_rejects_inconsistent_input():
    with pytest.raises(ValueError, match="n_particles"):
        observed_mask(np.zeros((2, 6)), n_particles=4)
    with pytest.raises(ValueError, match="computed together"):
        observed_mask(np.array([[1.0, np.nan, 1.0, 1.0]]), particle_dim=2)
    with pytest.raises(ValueError, match="multiple of particle_dim"):
        observed_mask(np.zeros((2, 5)), particle_dim=2)
    with pytest.raises(ValueError, match="float array"):
        observed_mask(np.zeros((2, 5), dtype=int))
    with pytest.raises(ValueError, match="2-D"):
        observed_mask(np.zeros(5))
    with pytest.raises(ValueError, match="particle_dim"):
        observed_mask(np.zeros((2, 4)), particle_dim=0)
