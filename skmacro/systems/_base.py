"""The interface every microscopic system implements."""

from abc import ABC, abstractmethod

import numpy as np
from tqdm.auto import tqdm

from .._arrays import check_rows, n_rows, take_rows
from .._chunking import FLOAT_BUDGET, row_chunks
from ..integrate import get_stepper, integrate, n_steps_between
from ..storage import TrajectoryStore


class System(ABC):
    """A microscopic system ``dx/dt = f(x)`` of ``n_particles`` particles with
    ``particle_dim`` coordinates each, stored particle-major.

    Subclasses define the class attributes ``particle_dim`` and
    ``observable_names`` and set ``n_particles`` in ``__init__``. A system
    whose state holds some coordinates' time derivatives (positions, whose
    derivative is a velocity stored in the state) names them in
    ``free_coordinates`` and implements :meth:`free_forces`.
    """

    particle_dim: int
    n_particles: int
    observable_names: tuple
    #: Coordinates of a particle (indices into ``range(particle_dim)``) whose
    #: time derivative can be read off the state without a force evaluation,
    #: e.g. ``dr/dt = v``; none by default.
    free_coordinates = ()

    @property
    def n_features(self):
        """Microscopic dimension ``N = n_particles * particle_dim``."""
        return self.n_particles * self.particle_dim

    @property
    def n_observables(self):
        """Number ``d*`` of macroscopic observables."""
        return len(self.observable_names)

    @abstractmethod
    def observables(self, X):
        """Macroscopic observables ``z* = phi*(x)``, differentiable in torch.

        Parameters
        ----------
        X : torch.Tensor of shape (n_samples, n_features)

        Returns
        -------
        torch.Tensor of shape (n_samples, n_observables)
        """

    def forces(self, X):
        """All microscopic forces ``f(x) = dx/dt``.

        ``X`` is read in row blocks (it may live on disk: ``np.memmap``,
        zarr, h5py, dask); each block goes to :meth:`_forces`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_features), dtype float64
        """
        out = None
        for rows, block in self.iter_states(X):
            forces = self._forces(block)
            if out is None:
                out = np.empty((n_rows(X), self.n_features), dtype=forces.dtype)
            out[rows] = forces
        if out is None:  # no rows
            out = np.empty((0, self.n_features))
        return out

    def _forces(self, X):
        """All forces of an in-memory block of finite float64 states (what
        :meth:`forces` computes); subclasses implement it."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement forces(X) or _forces(X)"
        )

    def partial_forces(self, X, particles):
        """Forces on the given particles only, at a cost proportional to their
        number.

        ``X`` is read in row blocks; each goes to :meth:`_partial_forces`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        particles : array-like of int, shape (n_samples, k) or (k,)
            Particle indices per configuration (a 1-D array is used for every
            configuration).

        Returns
        -------
        ndarray of shape (n_samples, k, particle_dim)
            ``out[s, j]`` is the force on particle ``particles[s, j]``.
        """
        X = self.check_states(X)
        particles = self.check_particles(particles, n_rows(X))
        out = np.empty(particles.shape + (self.particle_dim,))
        for rows, block in self.iter_states(X):
            out[rows] = self._partial_forces(block, particles[rows])
        return out

    def _partial_forces(self, X, particles):
        """Forces on the given particles of an in-memory block of finite
        float64 states; ``particles`` is an int array (n_block, k).
        Subclasses implement it."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement partial_forces(X, particles) "
            "or _partial_forces(X, particles)"
        )

    def free_forces(self, X):
        """The forces on every particle's ``free_coordinates``, which cost no
        force evaluation.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_particles, len(free_coordinates))
            ``out[s, i, j]`` is ``dx/dt`` of coordinate ``free_coordinates[j]``
            of particle ``i``; no columns for a system without free
            coordinates.
        """
        X = self.check_states(X)
        width = len(self.free_coordinates)
        out = np.empty((n_rows(X), self.n_particles, width))
        if width:
            for rows, block in self.iter_states(X):
                out[rows] = self._free_forces(block)
        return out

    def _free_forces(self, X):
        """The free coordinates' forces of an in-memory block of states."""
        raise NotImplementedError(
            f"{type(self).__name__} declares free_coordinates="
            f"{tuple(self.free_coordinates)} but does not implement free_forces"
        )

    @abstractmethod
    def sample_initial(self, n, random_state=None):
        """Draw ``n`` initial states, shape (n, n_features)."""

    def simulate(self, X0, t_end, dt, method="rk4", stride=1, out=None, verbose=False):
        """Integrate trajectories from ``X0`` with a fixed step (the
        microscopic simulator; ``skmacro.simulate`` rolls out learned latent
        dynamics).

        Parameters
        ----------
        X0 : array-like of shape (n_trajectories, n_features)
        t_end : float
            Final time; must be a whole number of steps ``dt``.
        dt : float
            Time step.
        method : {"rk4", "euler"}, default="rk4"
        stride : int, default=1
            Keep every ``stride``-th step.
        out : str, path, zarr group or array-like, optional
            Where to write the trajectories as they are produced: a path or
            zarr group makes a resumable float32 store (see
            :class:`skmacro.storage.TrajectoryStore`: a killed run resumes
            with the same call); an array-like of the result's shape (e.g. an
            ``np.memmap``) is filled in place, in its own dtype. Trajectories
            are integrated, and written, in batches that fit the memory
            budget.
        verbose : bool, default=False
            Show a progress bar over trajectories.

        Returns
        -------
        ndarray of shape (n_trajectories, n_steps // stride + 1, n_features)
            States at ``t = 0, stride*dt, ...``, the initial state first
            (float64 without ``out``); with ``out``, the array written.
        """
        X0 = take_rows(self.check_states(X0, "X0"), slice(None), dtype=np.float64)
        n_steps = n_steps_between(0.0, t_end, dt)
        get_stepper(method)
        if stride < 1 or int(stride) != stride:
            raise ValueError(f"stride must be a positive integer, got {stride!r}")
        stride = int(stride)
        shape = (len(X0), n_steps // stride + 1, self.n_features)
        store = TrajectoryStore.open(
            out,
            shape,
            fingerprint=dict(
                system=repr(self),
                t_end=float(t_end),
                dt=float(dt),
                method=method,
                stride=stride,
            ),
            X0=X0,
            dtype=np.float64 if out is None else np.float32,
        )
        pending = store.pending()
        # Trajectories integrated together: as many as the budget holds.
        batch = max(1, FLOAT_BUDGET // (shape[1] * shape[2]))
        with tqdm(total=len(pending), disable=not verbose, desc="trajectories") as bar:
            for start in range(0, len(pending), batch):
                rows = pending[start : start + batch]
                kept = integrate(
                    self.forces, X0[rows], dt, n_steps, method=method, stride=stride
                )
                store.write(rows, np.stack(kept, axis=1))
                bar.update(len(rows))
        return store.result()

    def check_states(self, X, name="X"):
        """Validate the shape of states for this system without reading them
        (values are checked for NaN and inf as blocks are read).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            In memory or any array with row slicing (``np.memmap``, zarr,
            h5py, dask).
        name : str, default="X"
            Argument name used in error messages.

        Returns
        -------
        array-like of shape (n_samples, n_features)

        Raises
        ------
        ValueError
            If ``X`` does not have ``n_features`` columns.
        """
        X = check_rows(X, name, ensure_min_samples=0)
        if X.shape[1] != self.n_features:
            raise ValueError(
                f"{name} must have shape (n_samples, {self.n_features}) for "
                f"{type(self).__name__}, got {tuple(X.shape)}"
            )
        return X

    def iter_states(self, X, name="X"):
        """Validate states and read them in row blocks that fit the memory
        budget, for code that works on states in memory.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            In memory or any array with row slicing.
        name : str, default="X"

        Yields
        ------
        rows : slice
        block : ndarray of shape (n_rows, n_features), float64, finite
        """
        X = self.check_states(X, name)
        for rows in row_chunks(n_rows(X), self.n_features):
            yield rows, take_rows(X, rows, dtype=np.float64, name=name)

    def check_particles(self, particles, n_samples):
        """Validate particle indices for :meth:`partial_forces`.

        Parameters
        ----------
        particles : array-like of int, shape (n_samples, k) or (k,)
            A 1-D array is used for every configuration.
        n_samples : int

        Returns
        -------
        ndarray of int, shape (n_samples, k)
        """
        particles = np.asarray(particles)
        if particles.size and not np.issubdtype(particles.dtype, np.integer):
            raise TypeError(
                f"particles must be integer indices, got dtype {particles.dtype}"
            )
        particles = particles.astype(np.intp, copy=False)
        if particles.ndim == 1:
            particles = np.broadcast_to(particles, (n_samples, particles.shape[0]))
        if particles.ndim != 2 or particles.shape[0] != n_samples:
            raise ValueError(
                f"particles must have shape ({n_samples}, k) or (k,), got "
                f"{particles.shape}"
            )
        if particles.size and (
            particles.min() < 0 or particles.max() >= self.n_particles
        ):
            raise ValueError(
                f"particles must lie in [0, {self.n_particles}), got values in "
                f"[{particles.min()}, {particles.max()}]"
            )
        return particles
