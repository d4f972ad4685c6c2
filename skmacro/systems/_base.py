"""The interface every microscopic system implements."""

from abc import ABC, abstractmethod

import numpy as np
from sklearn.utils import assert_all_finite

from ..integrate import integrate, n_steps_between


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

    @abstractmethod
    def forces(self, X):
        """All microscopic forces ``f(x) = dx/dt``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_features)
        """

    @abstractmethod
    def partial_forces(self, X, particles):
        """Forces on the given particles only, at a cost proportional to their
        number.

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
        if self.free_coordinates:
            raise NotImplementedError(
                f"{type(self).__name__} declares free_coordinates="
                f"{tuple(self.free_coordinates)} but does not implement free_forces"
            )
        X = self.check_states(X)
        return np.empty((len(X), self.n_particles, 0))

    @abstractmethod
    def sample_initial(self, n, random_state=None):
        """Draw ``n`` initial states, shape (n, n_features)."""

    def simulate(self, X0, t_end, dt, method="rk4", stride=1):
        """Integrate trajectories from ``X0`` with a fixed step.

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

        Returns
        -------
        ndarray of shape (n_trajectories, n_steps // stride + 1, n_features)
            States at ``t = 0, stride*dt, ...``, the initial state first.
        """
        X0 = self.check_states(X0, "X0", dtype=np.float64)
        n_steps = n_steps_between(0.0, t_end, dt)
        kept = integrate(self.forces, X0, dt, n_steps, method=method, stride=stride)
        return np.stack(kept, axis=1)

    def check_states(self, X, name="X", dtype=None):
        """Validate states for this system.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        name : str, default="X"
            Argument name used in error messages.
        dtype : numpy dtype or None, default=None
            Convert to this dtype (None keeps the input's).

        Returns
        -------
        ndarray of shape (n_samples, n_features)

        Raises
        ------
        ValueError
            If ``X`` has the wrong shape or holds NaN or inf.
        """
        X = np.asarray(X, dtype=dtype)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(
                f"{name} must have shape (n_samples, {self.n_features}) for "
                f"{type(self).__name__}, got {X.shape}"
            )
        # Not np.isfinite(X), which allocates a boolean array as large as X.
        try:
            assert_all_finite(X, input_name=name)
        except ValueError:
            raise ValueError(f"{name} contains NaN or inf") from None
        return X

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
