"""Cheap force models fitted to the computed forces, for the control variate
of :class:`~skmacro.PartialForceDynamics` (``control_variate=<model>``).

A force model guesses the microscopic forces ``f(x)`` of every coordinate
of a state. The statistics pass then estimates ``J f`` as ``J h + J W (f -
h)``: exact where the guess ``h`` is, unbiased whatever it is, and with a
variance that shrinks with ``|f - h|`` on the coordinates that were not
computed (see :mod:`skmacro.statistics`). Where forces are expensive
(quantum chemistry, a large machine-learned potential) and a cheap model
is close to them, this turns forces on a few particles per configuration
into nearly the information of all of them.

A model is any object with ``predict(X) -> (n_samples, N)``; one with
``fit(X, F)`` is fitted on the computed forces ``F`` (a SciPy CSR array
whose stored entries are the computed ones) of other configurations than
those it is asked about, so the estimate stays unbiased.
"""

from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from joblib import Parallel, delayed
from scipy.interpolate import BSpline
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from ._arrays import check_rows, take_rows
from ._validation import check_states
from .forces import PartialForces
from .systems.neighbours import (
    CellList,
    cubic_box_side,
    minimum_image,
    pairs_within,
    wrap,
)

__all__ = ["PairForceModel"]


class PairForceModel(BaseEstimator):
    r"""Pair forces with a learned radial profile, fitted by least squares.

    The force on particle ``i`` is modelled as a sum over its neighbours
    within ``r_cut`` of a radial profile along the unit vector between them,

    .. math:: \hat F_i = \sum_{j \ne i, r_{ij} < r_{cut}} w(r_{ij})\,
              \hat d_{ij}, \qquad w(r) = \sum_k c_k B_k(r),

    with :math:`\hat d_{ij} = (r_i - r_j) / r_{ij}` (minimum image) and
    cubic B-splines :math:`B_k` on uniform intervals from just below the
    closest pair seen in the fit (0.98 of its distance) to ``r_cut``
    (continued linearly to closer pairs); the
    coefficients :math:`c` are the least-squares fit to the computed
    forces. Any pair potential
    (Lennard-Jones, Morse, soft spheres) has exactly this form, so the model
    converges to its forces; for many-body forces it is the best pair
    approximation, which still lowers the variance of the estimates.

    **Scope.** One species of particles in a cubic periodic box (side from
    ``density`` or fixed by ``box``), as :class:`~skmacro.nn.ParticleSetClosure`.

    **Layout.** States are particle-major rows of ``particle_dim``
    coordinates per particle: the position (coordinates 0-2), then, when
    ``particle_dim >= 6``, the velocity (3-5). The microscopic vector field
    of such a state is ``(dr/dt, dv/dt) = (v, F / m)``: the model predicts
    ``v`` for the position coordinates and the pair force (in the units of
    the computed forces, so the mass is learned with the profile) for the
    velocity coordinates. With ``particle_dim`` 3, 4 or 5 the pair force is
    predicted on the position coordinates (an overdamped system). Any
    further coordinates are predicted as 0.

    Parameters
    ----------
    r_cut : float
        Range of the pair profile.
    particle_dim : int
        Coordinates per particle, at least 3 (see Layout).
    density : float, optional
        Number density: the box side of a state of ``n`` particles is
        ``(n / density)**(1/3)``. Give exactly one of ``density`` and ``box``.
    box : float, optional
        Fixed box side.
    n_basis : int, default=40
        Number of B-spline functions of the profile.
    max_fit_particles : int, default=20000
        At most this many computed particles (drawn at random) enter the
        least-squares fit; their neighbour environments are what it costs.
    ridge : float, default=1e-8
        Tikhonov weight, relative to the mean diagonal of the normal
        equations.
    n_jobs : int or None, default=None
        Threads that :meth:`predict` guesses states on (joblib's
        convention: None is one unless in a ``parallel_config`` context,
        -1 all cores).
    random_state : int, RandomState or None, default=0
        Draws the fitted particles when there are more than
        ``max_fit_particles``.

    Attributes
    ----------
    knots_ : ndarray
        The B-splines' knots.
    coef_ : ndarray of shape (n_basis,)
        The profile's coefficients :math:`c`.
    n_fit_particles_ : int
        Computed particles the fit used.
    relative_residual_ : float
        Root-mean-square residual of the fit over the root-mean-square
        computed force (0 for an exact pair potential).

    Examples
    --------
    >>> from skmacro.systems import LennardJones
    >>> from skmacro.sampling import sample_partial_forces
    >>> lj = LennardJones(n_atoms=108)
    >>> X = lj.simulate(lj.sample_initial(1, random_state=0), t_end=0.01)[0]
    >>> F = sample_partial_forces(lj, X, p=0.25, random_state=0, format="sparse")
    >>> model = lj.force_model().fit(X, F)
    >>> bool(model.relative_residual_ < 1e-2)
    True
    """

    _parameter_constraints = {
        "r_cut": [Interval(Real, 0, None, closed="neither")],
        "particle_dim": [Interval(Integral, 3, None, closed="left")],
        "density": [Interval(Real, 0, None, closed="neither"), None],
        "box": [Interval(Real, 0, None, closed="neither"), None],
        "n_basis": [Interval(Integral, 4, None, closed="left")],
        "max_fit_particles": [Interval(Integral, 1, None, closed="left")],
        "ridge": [Interval(Real, 0, None, closed="left")],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        r_cut,
        particle_dim,
        *,
        density=None,
        box=None,
        n_basis=40,
        max_fit_particles=20000,
        ridge=1e-8,
        n_jobs=None,
        random_state=0,
    ):
        self.r_cut = r_cut
        self.particle_dim = particle_dim
        self.density = density
        self.box = box
        self.n_basis = n_basis
        self.max_fit_particles = max_fit_particles
        self.ridge = ridge
        self.n_jobs = n_jobs
        self.random_state = random_state

    # ------------------------------------------------------------ validation

    def _check_parameters(self):
        self._validate_params()
        if (self.density is None) == (self.box is None):
            raise ValueError(
                "give exactly one of density (the box follows from the number of "
                f"particles) and box, got density={self.density!r}, box={self.box!r}"
            )

    def _box_for(self, n_features):
        if n_features % self.particle_dim:
            raise ValueError(
                f"X has {n_features} features, not a multiple of particle_dim="
                f"{self.particle_dim}"
            )
        n = n_features // self.particle_dim
        box = cubic_box_side(n, density=self.density, box=self.box, cutoff=self.r_cut)
        return n, box

    @property
    def _force_offset(self):
        """First coordinate of a particle that holds its force."""
        return 3 if self.particle_dim >= 6 else 0

    # ------------------------------------------------------------------- fit

    def fit(self, X, F):
        """Fit the radial profile to the computed forces.

        Parameters
        ----------
        X : array-like of shape (n_samples, N)
            States (read row by row).
        F : array-like or SciPy sparse of shape (n_samples, N)
            Their forces: NaN where not computed (dense), or the stored
            entries (sparse). Only the force coordinates of each particle
            (see Layout) are used; a particle enters with those of its
            force coordinates that were computed.

        Returns
        -------
        self
        """
        self._check_parameters()
        X = check_rows(X)
        n_samples, n_features = X.shape
        n, box = self._box_for(n_features)
        # Only the computed entries are read; p=1 skips inferring a sampling
        # probability that the fit does not use.
        forces = PartialForces(F, n_features, p=1)
        if forces.n_samples != n_samples:
            raise ValueError(
                f"F has {forces.n_samples} rows but X has {n_samples}: they must "
                "describe the same configurations"
            )
        F = forces.computed_csr()
        rows, particles = self._fit_particles(F, n)
        if len(particles) == 0:
            raise ValueError(
                "F holds no computed force coordinate (coordinates "
                f"{self._force_offset}-{self._force_offset + 2} of a particle)"
            )
        self.n_fit_particles_ = len(particles)
        environments = []
        for row in np.unique(rows):
            own = particles[rows == row]
            state = take_rows(X, [row])[0]
            environments.append((row, own, *self._environment(state, own, n, box)))
        distances = np.concatenate([env[-1] for env in environments])
        if len(distances) == 0:
            raise ValueError(
                f"no computed particle has a neighbour within r_cut={self.r_cut}"
            )
        self.knots_ = _clamped_knots(0.98 * distances.min(), self.r_cut, self.n_basis)
        design, target = [], []
        for row, own, query, unit, r in environments:
            basis = BSpline.design_matrix(self._clip(r), self.knots_, 3)
            for axis in range(3):
                # (k, n_basis): sum over each query particle's pairs.
                block = _sum_by(query, len(own)) @ (basis.multiply(unit[:, [axis]]))
                columns = own * self.particle_dim + self._force_offset + axis
                computed, values = _entries(F, row, columns)
                design.append(block.tocsr()[computed])
                target.append(values)
        design = sp.vstack(design).toarray()
        target = np.concatenate(target)
        normal = design.T @ design
        scale = self.ridge * np.trace(normal) / len(normal)
        self.coef_ = np.linalg.solve(
            normal + scale * np.eye(len(normal)), design.T @ target
        )
        residual = target - design @ self.coef_
        self.relative_residual_ = float(
            np.sqrt(
                np.mean(residual**2) / max(np.mean(target**2), np.finfo(float).tiny)
            )
        )
        self.n_features_in_ = n_features
        return self

    def _fit_particles(self, F, n):
        """Rows and particles with a computed force coordinate, at most
        ``max_fit_particles`` of them drawn at random."""
        coo = F.tocoo()
        offset = self._force_offset
        local = coo.col % self.particle_dim
        keep = (local >= offset) & (local < offset + 3)
        pairs = np.unique(
            coo.row[keep].astype(np.int64) * n + coo.col[keep] // self.particle_dim
        )
        if len(pairs) > self.max_fit_particles:
            rng = check_random_state(self.random_state)
            pairs = np.sort(rng.choice(pairs, self.max_fit_particles, replace=False))
        return pairs // n, pairs % n

    def _environment(self, x, particles, n, box):
        """Pairs of the given particles: (query row, unit vector, distance)."""
        positions = wrap(
            np.asarray(x, dtype=np.float64).reshape(n, self.particle_dim)[:, :3], box
        )
        query, neighbour = CellList(positions, box, self.r_cut).within(particles)
        d = minimum_image(positions[particles[query]] - positions[neighbour], box)
        r = np.sqrt(np.einsum("pk,pk->p", d, d))
        return query, d / r[:, None], r

    def _clip(self, r):
        return np.clip(r, self.knots_[0], np.nextafter(self.knots_[-1], 0))

    def _profile(self, r):
        """``w(r)``, continued linearly below the closest fitted pair (a
        steep repulsive wall that a constant would cut off)."""
        spline = BSpline(self.knots_, self.coef_, 3)
        low = self.knots_[0]
        return spline(self._clip(r)) + spline.derivative()(low) * np.minimum(r - low, 0)

    # --------------------------------------------------------------- predict

    def predict(self, X):
        """Guessed forces of every coordinate.

        Parameters
        ----------
        X : array-like of shape (n_samples, N)

        Returns
        -------
        ndarray of shape (n_samples, N), float64
        """
        check_is_fitted(self, "coef_")
        X = check_states(X, n_features=self.n_features_in_, dtype=np.float64)
        n, box = self._box_for(X.shape[1])
        out = np.zeros(X.shape)
        # Threads: the neighbour search and NumPy's kernels release the GIL,
        # and each writes its own row of `out`.
        Parallel(n_jobs=self.n_jobs, prefer="threads")(
            delayed(self._guess_into)(x, guess, n, box)
            for x, guess in zip(X, out, strict=True)
        )
        return out

    def _guess_into(self, x, guess, n, box):
        """Write the guessed forces of one state ``x`` into ``guess``."""
        state = x.reshape(n, self.particle_dim)
        guess = guess.reshape(n, self.particle_dim)
        positions = wrap(state[:, :3], box)
        i, j = pairs_within(positions, box, self.r_cut)
        d = minimum_image(positions[i] - positions[j], box)
        r = np.sqrt(np.einsum("pk,pk->p", d, d))
        pair = d * (self._profile(r) / r)[:, None]
        for axis in range(3):
            guess[:, self._force_offset + axis] = np.bincount(
                i, pair[:, axis], n
            ) - np.bincount(j, pair[:, axis], n)
        if self._force_offset:
            guess[:, :3] = state[:, 3:6]


def _clamped_knots(low, high, n_basis):
    """Knots of ``n_basis`` cubic B-splines on uniform intervals of [low, high]."""
    inner = np.linspace(low, high, n_basis - 2)
    return np.r_[[low] * 3, inner, [high] * 3]


def _sum_by(query, size):
    """Sparse (size, n_pairs) matrix summing pair rows into their query."""
    return sp.csr_array(
        (np.ones(len(query)), (query, np.arange(len(query)))), shape=(size, len(query))
    )


def _entries(F, row, columns):
    """Which of ``columns`` row ``row`` of CSR ``F`` stores, and their values."""
    start, stop = F.indptr[row], F.indptr[row + 1]
    order = np.argsort(F.indices[start:stop])
    stored = F.indices[start:stop][order]
    at = np.minimum(np.searchsorted(stored, columns), max(len(stored) - 1, 0))
    computed = (stored[at] == columns) if len(stored) else np.zeros(len(columns), bool)
    values = F.data[start:stop][order][at[computed]].astype(np.float64)
    return computed, values
