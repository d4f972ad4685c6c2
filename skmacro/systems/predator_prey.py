"""The one-dimensional spatial predator-prey system of the paper, Section 5.1."""

import numbers

import numpy as np
import torch
from sklearn.utils import check_random_state

from .._validation import check_choice
from ._base import System

__all__ = ["PredatorPrey"]

DIFFUSION_SCALINGS = ("reference", "physical")


class PredatorPrey(System):
    r"""Predator-prey reaction-diffusion system on a cell-centred grid
    (paper Eq. 15 and Appendix B.1, Eq. 40-42).

    The PDE on :math:`x \in [0, 1]` with Neumann boundaries,

    .. math::

        \partial_t u = u (1 - u - v) + D\, \partial_{xx} u, \qquad
        \partial_t v = a v (u - b) + \partial_{xx} v,

    is discretised on ``n_cells`` cells centred at
    :math:`x_i = (i - 1/2)/n_{cells}`. The Laplacian is the stencil
    ``[1, -2, 1]``; at the two boundary cells it uses the single neighbour
    difference (Eq. 41), i.e. the state is padded by replication. The
    microscopic state is ``X = (u_1, ..., u_n, v_1, ..., v_n)``, so
    ``n_features = n_particles = 2 * n_cells`` and a "particle" is one grid
    value (``particle_dim = 1``). The observables are the spatial means
    :math:`z^* = (\bar u, \bar v)` (Eq. 16).

    **The paper's text and its experiments differ**; the defaults reproduce
    the experiments (the paper's reference code), which produced the
    published numbers:

    * ``D = 0`` (prey do not diffuse), as stated in Appendix B.1.
    * ``diffusion_scaling="reference"``: the stencil is *not* divided by
      :math:`\Delta x^2`, so the effective diffusion coefficient of ``v`` is
      :math:`\Delta x^2 = 4 \times 10^{-4}` for 50 cells. Eq. 41 as printed
      divides by :math:`\Delta x^2` (``diffusion_scaling="physical"``); then
      explicit Euler at :math:`\Delta t = 0.01` is unstable (it needs
      :math:`\Delta t \le \Delta x^2 / 2 = 2 \times 10^{-4}`).
    * Initial states (Eq. 40) are
      :math:`u_0 = m + A \cos(5 \pi x)`, :math:`v_0 = 1 - m - A \cos(5\pi x)`
      with mean :math:`m \sim U(0.4, 0.6)` and amplitude
      :math:`A \sim U(0, 0.2)`. Eq. 40 as printed swaps the two ranges.

    The paper's data sets, each trajectory from one :meth:`sample_initial`
    state: training data by explicit Euler,
    ``simulate(X0, t_end=30.0, dt=0.01, method="euler", stride=10)``; test
    data by ``method="rk4"`` with the same step, horizon and stride. (The
    reference code keeps the 300 states ``t = 0, 0.1, ..., 29.9``;
    ``simulate`` also returns the state at ``t = 30``.)

    Parameters
    ----------
    n_cells : int, default=50
        Number of grid cells; ``n_particles = 2 * n_cells``.
    a : float, default=3.0
        Predator growth rate.
    b : float, default=0.4
        Prey level below which predators decline.
    D : float, default=0.0
        Relative diffusion coefficient of the prey, ``>= 0``.
    diffusion_scaling : {"reference", "physical"}, default="reference"
        ``"reference"`` applies the stencil ``[1, -2, 1]`` as is (the paper's
        experiments); ``"physical"`` divides it by ``dx**2`` (Eq. 41 as
        printed).
    init_mean_range : tuple of float, default=(0.4, 0.6)
        Range of the uniform mean ``m`` of the initial states.
    init_amplitude_range : tuple of float, default=(0.0, 0.2)
        Range of the uniform amplitude ``A`` of the initial states.

    Examples
    --------
    >>> from skmacro.systems.predator_prey import PredatorPrey
    >>> system = PredatorPrey()
    >>> X0 = system.sample_initial(3, random_state=0)
    >>> X0.shape, system.forces(X0).shape
    ((3, 100), (3, 100))
    >>> system.partial_forces(X0, [0, 99]).shape
    (3, 2, 1)
    """

    particle_dim = 1
    observable_names = ("u_mean", "v_mean")

    def __init__(
        self,
        n_cells=50,
        a=3.0,
        b=0.4,
        D=0.0,
        diffusion_scaling="reference",
        init_mean_range=(0.4, 0.6),
        init_amplitude_range=(0.0, 0.2),
    ):
        self.n_cells = n_cells
        self.a = a
        self.b = b
        self.D = D
        self.diffusion_scaling = diffusion_scaling
        self.init_mean_range = init_mean_range
        self.init_amplitude_range = init_amplitude_range

    @property
    def n_particles(self):
        """Number of grid values ``2 * n_cells`` (``u`` then ``v``)."""
        self._validate()
        return 2 * self.n_cells

    @property
    def dx(self):
        """Grid spacing ``1 / n_cells``."""
        self._validate()
        return 1.0 / self.n_cells

    @property
    def grid(self):
        """Cell centres ``x_i = (i - 1/2) dx``, ndarray of shape (n_cells,)."""
        return (np.arange(self.n_cells) + 0.5) * self.dx

    def _validate(self):
        """Raise a ``ValueError`` naming the first invalid constructor argument."""
        n = self.n_cells
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n_cells must be a positive integer, got {n!r}")
        for name in ("a", "b", "D"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not np.isfinite(value)
            ):
                raise ValueError(f"{name} must be a finite real number, got {value!r}")
        if self.D < 0:
            raise ValueError(f"D must be >= 0 (a diffusion coefficient), got {self.D}")
        check_choice("diffusion_scaling", self.diffusion_scaling, DIFFUSION_SCALINGS)
        for name in ("init_mean_range", "init_amplitude_range"):
            value = getattr(self, name)
            try:
                low, high = (float(v) for v in value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{name} must be a pair (low, high) of real numbers, got {value!r}"
                ) from None
            if not (np.isfinite(low) and np.isfinite(high) and low <= high):
                raise ValueError(
                    f"{name} must be a finite pair with low <= high, got {value!r}"
                )

    def _diffusivities(self):
        """Stencil weights ``(D_u, D_v)`` including the chosen scaling."""
        scale = 1.0 if self.diffusion_scaling == "reference" else self.n_cells**2
        return np.array([self.D * scale, scale])

    def _forces(self, X):
        """All microscopic forces ``dX/dt`` of the semi-discrete system (Eq. 42)
        on an in-memory block of states ``(u_1, ..., u_n, v_1, ..., v_n)``."""
        uv = X.reshape(len(X), 2, self.n_cells)
        u, v = uv[:, 0], uv[:, 1]
        # Replication padding is the Neumann boundary stencil of Eq. 41.
        padded = np.pad(uv, ((0, 0), (0, 0), (1, 1)), mode="edge")
        laplacian = padded[..., :-2] - 2.0 * uv + padded[..., 2:]
        F = self._diffusivities()[:, None] * laplacian
        F[:, 0] += u * (1.0 - u - v)
        F[:, 1] += self.a * v * (u - self.b)
        return F.reshape(len(X), self.n_features)

    def _partial_forces(self, X, idx):
        """Forces on the requested grid values only (Eq. 42 row by row).

        Only ``u_i``, ``v_i`` and the two same-species neighbours of each
        requested value are read, so the cost is proportional to the number of
        requested particles, not to ``n_particles``. Particle ``i`` is
        ``u_{i+1}`` for ``i < n_cells`` and ``v_{i+1-n_cells}`` otherwise.
        """
        n = self.n_cells
        rows = np.arange(len(X))[:, None]
        species, cell = np.divmod(idx, n)
        offset = species * n
        # Neumann boundaries: a missing neighbour is replaced by the cell itself.
        left = offset + np.maximum(cell - 1, 0)
        right = offset + np.minimum(cell + 1, n - 1)
        own = X[rows, idx]
        u = X[rows, cell]
        v = X[rows, cell + n]
        laplacian = X[rows, left] - 2.0 * own + X[rows, right]
        reaction = np.where(species == 0, u * (1.0 - u - v), self.a * v * (u - self.b))
        out = reaction + self._diffusivities()[species] * laplacian
        return out[..., None]

    def observables(self, X):
        r"""Spatial means :math:`(\bar u, \bar v)` (Eq. 16), differentiable.

        Parameters
        ----------
        X : torch.Tensor of shape (n_samples, n_features)
            States; an array is converted with ``torch.as_tensor``. The dtype
            and device are kept.

        Returns
        -------
        torch.Tensor of shape (n_samples, 2)
        """
        X = torch.as_tensor(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(
                f"X must have shape (n_samples, {self.n_features}), got "
                f"{tuple(X.shape)}"
            )
        return X.reshape(X.shape[0], 2, self.n_cells).mean(dim=-1)

    def sample_initial(self, n, random_state=None):
        """Draw initial states of Eq. 40 (with the reference code's ranges).

        ``u_0 = m + A cos(5 pi x)``, ``v_0 = 1 - m - A cos(5 pi x)``, with
        ``A ~ U(init_amplitude_range)`` and ``m ~ U(init_mean_range)`` drawn
        in that order, as in the reference code.

        Parameters
        ----------
        n : int
            Number of states.
        random_state : int, RandomState instance or None, default=None

        Returns
        -------
        ndarray of shape (n, n_features)
        """
        self._validate()
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        rng = check_random_state(random_state)
        amplitude = rng.uniform(*self.init_amplitude_range, size=n)
        mean = rng.uniform(*self.init_mean_range, size=n)
        wave = amplitude[:, None] * np.cos(5.0 * np.pi * self.grid)
        u0 = mean[:, None] + wave
        return np.concatenate([u0, 1.0 - u0], axis=1)

    def __repr__(self):
        args = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in (
                "n_cells",
                "a",
                "b",
                "D",
                "diffusion_scaling",
                "init_mean_range",
                "init_amplitude_range",
            )
        )
        return f"{type(self).__name__}({args})"
