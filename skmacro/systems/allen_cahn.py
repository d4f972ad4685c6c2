"""The two-dimensional Allen-Cahn system of the paper, Section 5.3."""

import math
import numbers

import numpy as np
import scipy.fft
import torch
from sklearn.utils import check_random_state

from .._arrays import take_rows
from .._validation import check_choice
from ..integrate import n_steps_between
from ..storage import TrajectoryStore, simulate_into
from ._base import System

__all__ = ["AllenCahn"]

METHODS = ("rk4", "euler", "strang")

# The reference experiments step RK4 at 0.1 h^2 and keep every 100th state:
# snapshots are 10 h^2 apart (2.5e-4 on the 200 x 200 grid).
_EXPLICIT_DT = 0.1
_SNAPSHOT_SPACING = 10.0
# Default step of the split scheme, in units of h^2 (chosen by measurement
# against RK4 at 0.1 h^2; see CHANGES.md).
_STRANG_DT = 1.0
# |z| bound of the stability region on the negative real axis.
_STABILITY = {"rk4": 2.785, "euler": 2.0}


class AllenCahn(System):
    r"""Allen-Cahn equation on the unit square with zero Neumann boundaries
    (paper Eq. 19-20 and Appendix B.2, Eq. 44-45).

    The PDE

    .. math::

        \partial_t v = \nabla^2 v - \frac{1}{\epsilon^2} F'(v), \qquad
        F(v) = \tfrac14 (v^2 - 1)^2, \qquad \partial_n v = 0 \text{ on }
        \partial\Omega,

    is discretised on the ``n_grid x n_grid`` cells of side
    :math:`h = 1/n_{grid}`, centred at :math:`x_i = y_i = (i + 1/2) h`, as in
    the paper's reference code. The Laplacian is the 5-point stencil
    divided by :math:`h^2`; a cell's missing neighbour across the boundary
    takes the cell's own value (zero normal derivative), so
    :math:`(\Delta_h v)_c = h^{-2} \sum_{c' \sim c} (v_{c'} - v_c)` over the
    cell's neighbours inside the square. The microscopic state is the
    row-major grid, ``X[k, i * n_grid + j]`` :math:`= v(x_i, y_j)`, so
    ``n_features = n_particles = n_grid**2`` and a "particle" is one grid
    value (``particle_dim = 1``).

    The observable is the discrete free energy (Eq. 20)

    .. math::

        E_h(v) = h^2 \sum_c \frac{F(v_c)}{\epsilon^2}
        + \frac12 \sum_{c \sim c'} (v_{c'} - v_c)^2,

    the second sum over the interior faces (each pair of neighbouring cells
    once), i.e. :math:`h^2 \cdot \tfrac12 |\nabla v|^2` from squared forward
    differences. This is the energy whose gradient flow the discrete system
    is: :math:`\nabla E_h(v) = -h^2 f(v)` exactly, so
    :math:`dE_h/dt = -h^2 \sum_c (\partial_t v_c)^2` (Eq. 45).

    **The paper's text and its experiments differ**; the defaults reproduce
    the experiments (the paper's reference code):

    * ``epsilon=None`` is :math:`\epsilon = h m / (2\sqrt2 \tanh^{-1} 0.9)`
      with :math:`m = 10` (Kim et al., 2021), about 0.012007 on the
      200 x 200 grid: an interface about ten cells wide. The printed
      :math:`10 \times 200 / (2\sqrt2 \tanh^{-1} 0.9)` has ``200`` in place
      of :math:`h = 1/200`.
    * Time step: the experiments run RK4 at :math:`\Delta t = 0.1 h^2`
      (2.5e-6 for 200 x 200) to :math:`t = 0.1` and keep every 100th
      state. The printed :math:`\Delta t = 1/N = 2.5 \times 10^{-5}` is
      outside RK4's stability region: the stiffest mode has
      :math:`|\lambda| \approx 8/h^2 + 2/\epsilon^2`, so
      :math:`|\lambda \Delta t| \approx 8.3 > 2.79`. :meth:`simulate`
      defaults to RK4 at :math:`0.1 h^2` with snapshots :math:`10 h^2`
      apart.
    * The reference code records, as the force of a stored state, the
      averaged RK4 slope of the step that leaves it; here (and in
      :func:`skmacro.sampling.sample_partial_forces`) the force is the
      vector field :math:`f(x)` at the stored state.
    * The reference code's energy sums over the :math:`(n-2)^2` inner
      cells only, with central differences; the energy here is the one
      above, of which the discrete dynamics is the exact gradient flow.
      Both vanish when :math:`v \equiv -1`, so :meth:`active_snapshots`
      with the reference's threshold 1e-4 drops the same equilibrium
      states.

    Initial states are tori (Eq. 44),
    :math:`v_0 = -1 + \tanh\frac{r_1 - d}{\sqrt2 \epsilon}
    - \tanh\frac{r_2 - d}{\sqrt2 \epsilon}` with :math:`d` the distance to
    the centre of the square, the outer radius
    :math:`r_1 \sim U(0.3, 0.4)` and the inner radius
    :math:`r_2 \sim U(0.1, 0.15)`. Under the flow the hole closes first,
    then the disc shrinks and vanishes near :math:`t \approx r_1^2 / 2`;
    afterwards :math:`v \equiv -1` and :math:`E \approx 0`.

    Data at the paper's scale, each trajectory from one
    :meth:`sample_initial` state (or :meth:`initial_states` for given
    radii): ``simulate(X0, t_end=0.1)`` (the experiments' RK4), or
    ``simulate(X0, t_end=0.1, method="strang")``, Strang splitting with
    exact sub-steps at a step ten times larger, much faster and close to
    RK4 (see :meth:`simulate`); then drop the equilibrium snapshots with
    :meth:`active_snapshots`. (The reference code keeps the 400 states
    ``t = 0, ..., 0.09975``; ``simulate`` also returns the state at
    ``t = 0.1``.)

    Parameters
    ----------
    n_grid : int, default=200
        Cells per side; ``n_particles = n_grid**2``.
    epsilon : float or None, default=None
        Interface parameter :math:`\epsilon > 0`; None is Kim et al.'s
        :math:`10 h / (2\sqrt2 \tanh^{-1} 0.9)`.
    outer_radius_range : tuple of float, default=(0.3, 0.4)
        Range of the uniform outer radius :math:`r_1` of the initial torus.
    inner_radius_range : tuple of float, default=(0.1, 0.15)
        Range of the uniform inner radius :math:`r_2`; must lie below
        ``outer_radius_range``.

    Examples
    --------
    >>> from skmacro.systems import AllenCahn
    >>> system = AllenCahn(n_grid=16)
    >>> X0 = system.sample_initial(3, random_state=0)
    >>> X0.shape, system.forces(X0).shape
    ((3, 256), (3, 256))
    >>> system.partial_forces(X0, [0, 17, 255]).shape
    (3, 3, 1)
    >>> system.observables(X0).shape
    torch.Size([3, 1])
    >>> round(AllenCahn().eps, 6)
    0.012007
    """

    particle_dim = 1
    observable_names = ("free_energy",)

    def __init__(
        self,
        n_grid=200,
        epsilon=None,
        outer_radius_range=(0.3, 0.4),
        inner_radius_range=(0.1, 0.15),
    ):
        self.n_grid = n_grid
        self.epsilon = epsilon
        self.outer_radius_range = outer_radius_range
        self.inner_radius_range = inner_radius_range

    # ------------------------------------------------------------- geometry

    @property
    def n_particles(self):
        """Number of grid values ``n_grid**2``."""
        self._validate()
        return self.n_grid**2

    @property
    def h(self):
        """Grid spacing ``1 / n_grid``."""
        self._validate()
        return 1.0 / self.n_grid

    @property
    def eps(self):
        r"""The interface parameter in use: ``epsilon``, or
        :math:`10 h / (2\sqrt2 \tanh^{-1} 0.9)` when it is None."""
        self._validate()
        if self.epsilon is None:
            return 10.0 * self.h / (2.0 * math.sqrt(2.0) * math.atanh(0.9))
        return float(self.epsilon)

    @property
    def grid(self):
        """Cell centres ``(i + 1/2) h``, ndarray of shape (n_grid,); the same
        along ``x`` (rows of the grid) and ``y`` (columns)."""
        return (np.arange(self.n_grid) + 0.5) * self.h

    def _validate(self):
        """Raise a ``ValueError`` naming the first invalid constructor argument."""
        n = self.n_grid
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n_grid must be a positive integer, got {n!r}")
        eps = self.epsilon
        if eps is not None and (
            isinstance(eps, bool)
            or not isinstance(eps, numbers.Real)
            or not (np.isfinite(eps) and eps > 0)
        ):
            raise ValueError(
                f"epsilon must be a positive finite number or None, got {eps!r}"
            )
        ranges = {}
        for name in ("outer_radius_range", "inner_radius_range"):
            value = getattr(self, name)
            try:
                low, high = (float(v) for v in value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{name} must be a pair (low, high) of real numbers, got {value!r}"
                ) from None
            if not (np.isfinite(low) and np.isfinite(high) and 0 < low <= high):
                raise ValueError(
                    f"{name} must be a finite pair with 0 < low <= high, got {value!r}"
                )
            ranges[name] = (low, high)
        if ranges["inner_radius_range"][1] >= ranges["outer_radius_range"][0]:
            raise ValueError(
                "inner_radius_range must lie below outer_radius_range (a torus "
                f"needs r2 < r1), got {self.inner_radius_range!r} and "
                f"{self.outer_radius_range!r}"
            )

    def _as_grid(self, X):
        return X.reshape(len(X), self.n_grid, self.n_grid)

    # ------------------------------------------------------------- forces

    def laplacian(self, X):
        r"""The 5-point Laplacian :math:`\Delta_h v` with zero Neumann
        boundaries.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Row-major grids.

        Returns
        -------
        ndarray of shape (n_samples, n_features), dtype float64
        """
        out = np.empty(self.check_states(X).shape)
        for rows, block in self.iter_states(X):
            out[rows] = _laplacian(self._as_grid(block), self.h).reshape(block.shape)
        return out

    def _forces(self, X):
        r"""All microscopic forces :math:`f(v) = \Delta_h v + (v - v^3) /
        \epsilon^2` (Eq. 19 on the grid) of an in-memory block of row-major
        grids."""
        return _vector_field(self._as_grid(X), self.h, self.eps).reshape(X.shape)

    def _partial_forces(self, X, idx):
        """Forces on the requested grid values only (Eq. 19 on the grid).

        Only each requested value and its (up to) four neighbours are read,
        so the cost is proportional to the number of requested particles,
        not to ``n_particles``. Particles are flat grid indices
        ``i * n_grid + j``.
        """
        n = self.n_grid
        rows = np.arange(len(X))[:, None]
        i, j = np.divmod(idx, n)
        own = X[rows, idx].astype(np.float64)
        diffusion = np.zeros_like(own)
        # Zero Neumann boundaries: a neighbour outside the square is the cell
        # itself, whose difference vanishes.
        for neighbour in (
            np.maximum(i - 1, 0) * n + j,
            np.minimum(i + 1, n - 1) * n + j,
            i * n + np.maximum(j - 1, 0),
            i * n + np.minimum(j + 1, n - 1),
        ):
            diffusion += X[rows, neighbour] - own
        out = diffusion / self.h**2 + _reaction(own, self.eps)
        return out[..., None]

    # ------------------------------------------------------------- observables

    def observables(self, X):
        r"""The discrete free energy :math:`E_h(v)` (Eq. 20), differentiable.

        :math:`E_h = h^2 \sum_c F(v_c)/\epsilon^2 + \frac12 \sum_{c\sim c'}
        (v_{c'} - v_c)^2` over cells and interior faces; its gradient is
        :math:`-h^2 f(v)`, so along the flow
        :math:`dE_h/dt = -h^2 \sum_c f_c^2` (Eq. 45).

        Parameters
        ----------
        X : torch.Tensor of shape (n_samples, n_features)
            Row-major grids; an array is converted with ``torch.as_tensor``.
            The dtype and device are kept.

        Returns
        -------
        torch.Tensor of shape (n_samples, 1)
        """
        X = torch.as_tensor(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(
                f"X must have shape (n_samples, {self.n_features}), got "
                f"{tuple(X.shape)}"
            )
        V = X.reshape(X.shape[0], self.n_grid, self.n_grid)
        potential = ((V * V - 1.0) ** 2).sum(dim=(1, 2)) * (
            0.25 * self.h**2 / self.eps**2
        )
        gradient = 0.5 * (
            (V[:, 1:] - V[:, :-1]).square().sum(dim=(1, 2))
            + (V[:, :, 1:] - V[:, :, :-1]).square().sum(dim=(1, 2))
        )
        return (potential + gradient)[:, None]

    # ------------------------------------------------------------- initial states

    def initial_states(self, r1, r2):
        r"""Torus initial states of Eq. 44 for given radii.

        :math:`v_0 = -1 + \tanh\frac{r_1 - d}{\sqrt2 \epsilon}
        - \tanh\frac{r_2 - d}{\sqrt2 \epsilon}`, :math:`d` the distance of
        a cell centre to :math:`(0.5, 0.5)`: about +1 in the ring
        :math:`r_2 < d < r_1` and -1 elsewhere, with :math:`v_0 = 0` near
        :math:`d = r_1` and :math:`d = r_2`.

        Parameters
        ----------
        r1 : float or array-like of shape (n,)
            Outer radii.
        r2 : float or array-like of shape (n,)
            Inner radii, ``0 < r2 < r1``.

        Returns
        -------
        ndarray of shape (n, n_features), dtype float64
            One state per pair ``(r1[k], r2[k])`` (a scalar pair gives
            ``n = 1``).
        """
        self._validate()
        r1 = np.atleast_1d(np.asarray(r1, dtype=np.float64))
        r2 = np.atleast_1d(np.asarray(r2, dtype=np.float64))
        if r1.ndim != 1 or r1.shape != r2.shape:
            raise ValueError(
                "r1 and r2 must be scalars or 1-D arrays of the same length, got "
                f"shapes {r1.shape} and {r2.shape}"
            )
        if not (np.all(np.isfinite(r1)) and np.all(np.isfinite(r2))):
            raise ValueError("r1 and r2 must be finite")
        if np.any(r2 <= 0) or np.any(r2 >= r1):
            raise ValueError("the radii must satisfy 0 < r2 < r1 for a torus")
        x = self.grid - 0.5
        d = np.sqrt(x[:, None] ** 2 + x[None, :] ** 2).ravel()
        width = math.sqrt(2.0) * self.eps
        return (
            -1.0
            + np.tanh((r1[:, None] - d) / width)
            - np.tanh((r2[:, None] - d) / width)
        )

    def sample_radii(self, n, random_state=None):
        """Draw torus radii uniformly from the two ranges.

        All ``n`` outer radii are drawn first, then the ``n`` inner radii, as
        in the reference code, whose training radii are
        ``sample_radii(400, random_state=0)`` (its test sets: 20 with seed 2
        and 50 with seed 1).

        Parameters
        ----------
        n : int
            Number of pairs.
        random_state : int, RandomState instance or None, default=None

        Returns
        -------
        ndarray of shape (n, 2)
            Columns ``(r1, r2)``.
        """
        self._validate()
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        rng = check_random_state(random_state)
        r1 = rng.uniform(*self.outer_radius_range, size=n)
        r2 = rng.uniform(*self.inner_radius_range, size=n)
        return np.stack([r1, r2], axis=1)

    def sample_initial(self, n, random_state=None):
        """Draw torus initial states (Eq. 44) with uniform radii.

        Equivalent to ``initial_states(*sample_radii(n, random_state).T)``.

        Parameters
        ----------
        n : int
            Number of states.
        random_state : int, RandomState instance or None, default=None

        Returns
        -------
        ndarray of shape (n, n_features), dtype float64
        """
        radii = self.sample_radii(n, random_state)
        return self.initial_states(radii[:, 0], radii[:, 1])

    # ------------------------------------------------------------- simulation

    def simulate(
        self,
        X0,
        t_end=0.1,
        dt=None,
        method="rk4",
        stride=None,
        dtype=np.float32,
        out=None,
        n_jobs=None,
        verbose=False,
    ):
        r"""Integrate trajectories from ``X0`` with a fixed step, one
        trajectory at a time per worker.

        Methods (all integrate in float64):

        * ``"rk4"``: classical Runge-Kutta on the semi-discrete system (the
          paper's experiments); default ``dt = 0.1 h**2``. Stable while
          ``dt`` is below about :math:`2.79 / (8/h^2 + 2/\epsilon^2)`.
        * ``"euler"``: explicit Euler; default ``dt = 0.1 h**2``.
        * ``"strang"``: Strang splitting, half a step of the reaction
          :math:`\dot v = (v - v^3)/\epsilon^2` solved exactly
          (:math:`v \mapsto v / \sqrt{v^2 + (1 - v^2) e^{-2t/\epsilon^2}}`),
          a full step of the diffusion :math:`\dot v = \Delta_h v` solved
          exactly in the cosine basis that diagonalises the Neumann 5-point
          Laplacian (``scipy.fft.dctn``, type II), and another half step of
          the reaction. Second order in ``dt``, stable for any step, and
          :math:`|v| \le 1` is preserved. Default ``dt = h**2``, ten times
          RK4's; it approximates the same semi-discrete system as RK4.

        Once a state is within a quarter of the stored dtype's resolution of
        a pure phase :math:`v \equiv \pm 1` (in the l2 norm), the flow only
        comes closer, so every later state rounds to it: they are filled in
        without further steps. With float32 storage this ends the work on a
        trajectory soon after its torus has vanished.

        Parameters
        ----------
        X0 : array-like of shape (n_trajectories, n_features)
            Initial states.
        t_end : float, default=0.1
            Final time, a whole number of steps ``dt``.
        dt : float or None, default=None
            Time step; None takes the method's default above.
        method : {"rk4", "euler", "strang"}, default="rk4"
        stride : int or None, default=None
            Keep every ``stride``-th step. None keeps states
            :math:`10 h^2` apart (every 100th RK4 step, as the reference
            code), which needs ``dt`` to divide :math:`10 h^2`.
        dtype : numpy floating dtype, default=numpy.float32
            Dtype of the returned states when ``out`` is None (``out``'s
            own dtype otherwise).
        out : str, path, zarr group or array-like, optional
            Where to write the trajectories as each finishes, so that memory
            holds one trajectory per worker, never all of them: a path or
            zarr group makes a resumable float32 store
            (:class:`skmacro.storage.TrajectoryStore`; a killed run resumes
            with the same call, and each worker writes its own trajectory);
            an array-like of the result's shape (``np.memmap``, zarr array,
            h5py dataset) is filled in place, in its own dtype.
        n_jobs : int or None, default=None
            Trajectories run in parallel with joblib (processes).
        verbose : bool, default=False
            Show a progress bar over trajectories.

        Returns
        -------
        ndarray of shape (n_trajectories, n_steps // stride + 1, n_features)
            States at ``t = 0, stride*dt, ...``, the initial state first;
            ``out`` itself when given.

        Raises
        ------
        ValueError
            For an explicit method at a ``dt`` outside its stability region
            (such as the paper's printed 2.5e-5 for RK4 at 200 x 200), and
            for the argument errors named in the message.
        """
        self._validate()
        check_choice("method", method, METHODS)
        X0 = take_rows(self.check_states(X0, "X0"), slice(None), dtype=np.float64)
        h2 = self.h**2
        if dt is None:
            dt = (_STRANG_DT if method == "strang" else _EXPLICIT_DT) * h2
        if isinstance(dt, bool) or not isinstance(dt, numbers.Real):
            raise ValueError(f"dt must be a positive finite number, got {dt!r}")
        if (
            isinstance(t_end, bool)
            or not isinstance(t_end, numbers.Real)
            or not (np.isfinite(t_end) and t_end >= 0)
        ):
            raise ValueError(f"t_end must be a finite number >= 0, got {t_end!r}")
        self._check_stable(method, dt)
        n_steps = n_steps_between(0.0, t_end, dt)
        stride = self._check_stride(stride, dt, h2)
        shape = (len(X0), n_steps // stride + 1, self.n_features)
        store = TrajectoryStore.open(
            out,
            shape,
            fingerprint=dict(
                system=repr(self),
                t_end=float(t_end),
                dt=float(dt),
                method=method,
                stride=int(stride),
            ),
            X0=X0,
            dtype=_check_float_dtype(dtype, "dtype"),
        )
        # Workers return trajectories in the dtype they are stored in.
        dtype = _check_float_dtype(getattr(store.array, "dtype", dtype), "out.dtype")
        settings = dict(
            n=self.n_grid,
            h=self.h,
            eps=self.eps,
            dt=float(dt),
            n_steps=n_steps,
            stride=stride,
            method=method,
            dtype=dtype,
        )
        return simulate_into(
            store,
            _trajectory,
            X0,
            settings,
            n_jobs=n_jobs,
            verbose=verbose,
            desc=method,
        )

    def _check_stable(self, method, dt):
        """Refuse an explicit step outside the stability region.

        For ``|v| <= 1`` the Jacobian's eigenvalues lie in
        ``[-(8/h^2) sin^2(pi (n-1) / 2n) - 2/eps^2, 1/eps^2]``; the negative
        end must stay inside the method's real stability interval.
        """
        if method not in _STABILITY:
            return
        n = self.n_grid
        stiffest = (
            8.0 / self.h**2 * math.sin(math.pi * (n - 1) / (2 * n)) ** 2
            + 2.0 / self.eps**2
        )
        limit = _STABILITY[method] / stiffest
        if dt > limit:
            raise ValueError(
                f"dt={dt!r} is outside the stability region of method={method!r} "
                f"on this grid: dt * |lambda| = {dt * stiffest:.3g} > "
                f"{_STABILITY[method]} for the stiffest mode, |lambda| = "
                f"{stiffest:.4g}; use dt <= {limit:.3g} (the default is "
                f"0.1 h**2 = {_EXPLICIT_DT * self.h**2:.3g}) or method='strang'"
            )

    def _check_stride(self, stride, dt, h2):
        if stride is None:
            spacing = _SNAPSHOT_SPACING * h2
            ratio = spacing / dt
            stride = round(ratio)
            if stride < 1 or not math.isclose(ratio, stride, rel_tol=1e-6):
                raise ValueError(
                    f"stride=None keeps states 10 h**2 = {spacing:.6g} apart, "
                    f"which is not a whole number of steps dt={dt!r}; pass "
                    "stride explicitly"
                )
            return stride
        if (
            isinstance(stride, bool)
            or not isinstance(stride, numbers.Integral)
            or stride < 1
        ):
            raise ValueError(f"stride must be a positive integer, got {stride!r}")
        return int(stride)

    def active_snapshots(self, trajectories, threshold=1e-4, chunk_size=64):
        """Which snapshots still hold an interface: free energy above
        ``threshold``.

        The torus vanishes near ``t = r1**2 / 2``; afterwards ``v = -1`` and
        the free energy is about 0. The reference experiments keep only the
        snapshots with energy above 1e-4. States are read ``chunk_size`` at
        a time, so ``trajectories`` may live on disk.

        Parameters
        ----------
        trajectories : array-like, 2-D or 3-D
            States of shape (n_snapshots, n_features) or (n_trajectories,
            n_snapshots, n_features), e.g. the result of :meth:`simulate` or
            an ``np.memmap`` / zarr array / h5py dataset of it.
        threshold : float, default=1e-4
            Keep snapshots whose free energy exceeds it.
        chunk_size : int, default=64
            Snapshots read and evaluated at once.

        Returns
        -------
        ndarray of bool, shape (n_snapshots,) or (n_trajectories, n_snapshots)
            True where the snapshot is kept; ``X[mask]`` selects them.
        """
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, numbers.Real)
            or not np.isfinite(threshold)
        ):
            raise ValueError(f"threshold must be a finite number, got {threshold!r}")
        if (
            isinstance(chunk_size, bool)
            or not isinstance(chunk_size, numbers.Integral)
            or chunk_size < 1
        ):
            raise ValueError(
                f"chunk_size must be a positive integer, got {chunk_size!r}"
            )
        shape = tuple(getattr(trajectories, "shape", np.shape(trajectories)))
        if len(shape) not in (2, 3) or shape[-1] != self.n_features:
            raise ValueError(
                "trajectories must have shape (n_snapshots, "
                f"{self.n_features}) or (n_trajectories, n_snapshots, "
                f"{self.n_features}), got {shape}"
            )
        if not hasattr(trajectories, "shape"):
            trajectories = np.asarray(trajectories)
        n_snapshots = shape[-2]
        mask = np.empty(shape[:-1], dtype=bool)
        for g in np.ndindex(shape[:-2]):  # one empty tuple for a 2-D input
            for start in range(0, n_snapshots, chunk_size):
                rows = (*g, slice(start, min(start + chunk_size, n_snapshots)))
                chunk = take_rows(
                    self.check_states(trajectories[rows], "trajectories"),
                    slice(None),
                    dtype=np.float64,
                    name="trajectories",
                )
                energy = self.observables(torch.from_numpy(chunk))[:, 0].numpy()
                mask[rows] = energy > threshold
        return mask

    def __repr__(self):
        args = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in (
                "n_grid",
                "epsilon",
                "outer_radius_range",
                "inner_radius_range",
            )
        )
        return f"{type(self).__name__}({args})"


# ----------------------------------------------------------------- kernels


def _check_float_dtype(dtype, name):
    try:
        checked = np.dtype(dtype)
    except TypeError:
        checked = None
    if checked is None or not np.issubdtype(checked, np.floating):
        raise ValueError(f"{name} must be a numpy floating dtype, got {dtype!r}")
    return checked


def _laplacian(V, h, out=None):
    """Neumann 5-point Laplacian of grids ``V`` (..., n, n): each interior
    face's difference, added to one cell and taken from the other."""
    if out is None:
        out = np.zeros_like(V)
    else:
        out.fill(0.0)
    d = V[..., 1:, :] - V[..., :-1, :]
    out[..., :-1, :] += d
    out[..., 1:, :] -= d
    d = V[..., :, 1:] - V[..., :, :-1]
    out[..., :, :-1] += d
    out[..., :, 1:] -= d
    out *= 1.0 / h**2
    return out


def _reaction(V, eps):
    """``-F'(v) / eps^2 = (v - v^3) / eps^2``."""
    # Not V**3: pow of negative bases takes numpy's slow path.
    return V * (1.0 - V * V) * (1.0 / eps**2)


def _vector_field(V, h, eps, out=None):
    out = _laplacian(V, h, out)
    out += _reaction(V, eps)
    return out


def _explicit_advance(method, h, eps, dt):
    """``advance(v, k)``: ``k`` RK4 or Euler steps from a (n, n) grid."""

    def f(v):
        return _vector_field(v, h, eps)

    def euler(v):
        return v + dt * f(v)

    def rk4(v):
        k1 = f(v)
        k2 = f(v + (0.5 * dt) * k1)
        k3 = f(v + (0.5 * dt) * k2)
        k4 = f(v + dt * k3)
        k1 += k4
        k2 += k3
        k1 += 2.0 * k2
        return v + (dt / 6.0) * k1

    step = rk4 if method == "rk4" else euler

    def advance(v, k):
        for _ in range(k):
            v = step(v)
        return v

    return advance


def _neumann_eigenvalues(n, h):
    """Eigenvalues (n, n) of the Neumann 5-point Laplacian in the type-II
    cosine basis: ``-(4/h^2) (sin^2(pi k / 2n) + sin^2(pi l / 2n))``."""
    s = np.sin(np.pi * np.arange(n) / (2 * n)) ** 2
    return -(4.0 / h**2) * (s[:, None] + s[None, :])


def _strang_advance(n, h, eps, dt):
    """``advance(v, k)``: ``k`` Strang steps ``R(dt/2) D(dt) R(dt/2)`` from a
    (n, n) grid, reaction ``R`` and diffusion ``D`` solved exactly."""
    decay = np.exp(dt * _neumann_eigenvalues(n, h))

    def reaction(v, t):
        # Exact flow of dv/dt = (v - v^3) / eps^2 over a time t.
        q = math.exp(-2.0 * t / eps**2)
        out = v * v
        out *= 1.0 - q
        out += q
        np.sqrt(out, out=out)
        return np.divide(v, out, out=out)

    def diffusion(v):
        c = scipy.fft.dctn(v, type=2, norm="ortho")
        c *= decay
        return scipy.fft.idctn(c, type=2, norm="ortho", overwrite_x=True)

    def advance(v, k):
        # Between kept states the two half steps of the reaction merge into
        # one exact full step.
        v = reaction(v, 0.5 * dt)
        for _ in range(k - 1):
            v = reaction(diffusion(v), dt)
        return reaction(diffusion(v), 0.5 * dt)

    return advance


def _trajectory(x0, *, n, h, eps, dt, n_steps, stride, method, dtype):
    """Integrate one trajectory; returns (n_steps // stride + 1, n * n)."""
    if method == "strang":
        advance = _strang_advance(n, h, eps, dt)
    else:
        advance = _explicit_advance(method, h, eps, dt)
    kept = np.empty((n_steps // stride + 1, n * n), dtype=dtype)
    v = np.array(x0, dtype=np.float64).reshape(n, n)
    kept[0] = v.ravel()
    # Below this l2 distance from v = +-1 a state rounds to +-1 in ``dtype``.
    settled = np.finfo(dtype).eps / 4
    # Steps after the last kept state are never stored, so never taken.
    for i in range(1, len(kept)):
        v = advance(v, stride)
        kept[i] = v.ravel()
        for phase in (-1.0, 1.0):
            # Near a pure phase every method here contracts the l2 distance
            # to it (a stable step of a symmetric negative-definite
            # linearisation), so all later states round to it as well.
            # (Not np.linalg.norm, whose BLAS call can cost more than a step.)
            gap = v - phase
            if np.sqrt(np.sum(gap * gap)) < settled:
                kept[i + 1 :] = phase
                return kept
    return kept
